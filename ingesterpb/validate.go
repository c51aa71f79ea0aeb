package ingesterpb

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"unicode/utf8"
	"unsafe"
)

// The labels of a series as this API carries them (TimeSeries, and the hand-over's series), checked
// with the rules the distributor applies to a remote-write request (distributor/validate.go), so
// that what one boundary refuses no other lets in:
//
//   - a metric name (__name__) that matches [a-zA-Z_:][a-zA-Z0-9_:]*;
//   - label names that match [a-zA-Z_][a-zA-Z0-9_]* (the legacy scheme, Mimir's default);
//   - label values that are valid UTF-8 and not empty (an empty value is no label: the distributor
//     drops it);
//   - names sorted and unique (the distributor sorts; a duplicate is refused).
//
// Why here: a label value that is not valid UTF-8 cannot be marshalled as a proto3 string, so once
// stored, every QueryStream that selects its series fails, on every replica, and again after each
// restart (the WAL replays it). The size limits (-validation.max-length-label-*,
// -validation.max-label-names-per-series) are the distributor's policy, checked once at the edge:
// a request that passes them there is never refused here because of a limit changed in between.

// ErrInvalidLabels wraps every error of ValidateLabels and ValidateLabelViews.
var ErrInvalidLabels = errors.New("ingesterpb: invalid series labels")

// MetricName is the name of the label that holds a series' metric name.
const MetricName = "__name__"

// IsLegacyMetricName reports whether s matches [a-zA-Z_:][a-zA-Z0-9_:]*.
func IsLegacyMetricName(s string) bool {
	if s == "" || (s[0] >= '0' && s[0] <= '9') {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !metricNameByte[s[i]] {
			return false
		}
	}
	return true
}

// IsLegacyLabelName reports whether s matches [a-zA-Z_][a-zA-Z0-9_]*.
func IsLegacyLabelName(s string) bool {
	if s == "" || (s[0] >= '0' && s[0] <= '9') {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !labelNameByte[s[i]] {
			return false
		}
	}
	return true
}

var labelNameByte, metricNameByte = func() (l, m [256]bool) {
	for c := 'a'; c <= 'z'; c++ {
		l[c], l[c-'a'+'A'] = true, true
	}
	for c := '0'; c <= '9'; c++ {
		l[c] = true
	}
	l['_'] = true
	m = l
	m[':'] = true
	return l, m
}()

// LabelsError is why ValidateLabels refused a series: Reason is the discard reason, with the
// distributor's (and Mimir's) names: missing_metric_name, metric_name_invalid, label_invalid,
// label_value_invalid, duplicate_label_names, plus labels_not_sorted and label_value_empty for
// what the distributor normalises away. It matches ErrInvalidLabels.
type LabelsError struct {
	Reason string
	msg    string
}

func (e *LabelsError) Error() string        { return "invalid series: " + e.msg }
func (e *LabelsError) Is(target error) bool { return target == ErrInvalidLabels }

func labelsError(reason, format string, args ...any) *LabelsError {
	return &LabelsError{Reason: reason, msg: fmt.Sprintf(format, args...)}
}

// checkLabel checks label i of a series given the name of the one before it (prev; "" for i = 0).
// It is the per-label part of every validation here, so that all of them apply the same rules.
func checkLabel(i int, prev, name, value string) *LabelsError {
	switch {
	case name == MetricName:
		if !IsLegacyMetricName(value) {
			return labelsError("metric_name_invalid", "invalid metric name %s (want [a-zA-Z_:][a-zA-Z0-9_:]*)", quoteTrunc(value))
		}
	case !IsLegacyLabelName(name):
		return labelsError("label_invalid", "invalid label name %s (want [a-zA-Z_][a-zA-Z0-9_]*)", quoteTrunc(name))
	case value == "":
		return labelsError("label_value_empty", "label %s has an empty value (a label with an empty value must be left out)", quoteTrunc(name))
	case !utf8.ValidString(value):
		return labelsError("label_value_invalid", "label %s has a value that is not valid UTF-8: %s", quoteTrunc(name), quoteTrunc(value))
	}
	if i > 0 && name <= prev {
		if name == prev {
			return labelsError("duplicate_label_names", "label name %s more than once", quoteTrunc(name))
		}
		return labelsError("labels_not_sorted", "labels not sorted by name: %s after %s", quoteTrunc(name), quoteTrunc(prev))
	}
	return nil
}

// ValidateLabelViews checks the labels of a decoded TimeSeries, in wire order (see the rules above).
// It allocates only when it refuses. Safe for concurrent use.
//
// It runs once per series of every Push that arrives over gRPC, so the common case — every label
// valid, ASCII — is one pass over the bytes without calls; anything else takes checkLabel, which
// finds the reason.
func ValidateLabelViews(ls []LabelView) error {
	hasName := false
	prev := ""
	for i := range ls {
		name, value := ls[i].Name, ls[i].Value
		if !fastLabelOK(name, value) || (i > 0 && !after(name, prev)) {
			if err := checkLabel(i, prev, name, value); err != nil {
				return err
			}
		}
		hasName = hasName || name == MetricName
		prev = name
	}
	if !hasName {
		return labelsError("missing_metric_name", "no metric name (no __name__ label)")
	}
	return nil
}

// fastLabelOK reports true only for a label checkLabel accepts (ignoring order): a legacy name
// other than __name__ (whose value has its own rule) with a non-empty ASCII value. False means
// "ask checkLabel", not "invalid".
func fastLabelOK(name, value string) bool {
	if len(name) == 0 || len(value) == 0 || name[0] <= '9' || name == MetricName {
		return false // '_' and letters sort after '9'; digits and other punctuation need checkLabel
	}
	for i := 0; i < len(name); i++ {
		if !labelNameByte[name[i]] {
			return false
		}
	}
	return isASCII(value)
}

// isASCII reports whether s holds only ASCII bytes, eight at a time.
func isASCII(s string) bool {
	var or uint64
	i := 0
	for ; i+8 <= len(s); i += 8 {
		or |= binary.LittleEndian.Uint64(unsafe.Slice(unsafe.StringData(s[i:]), 8))
	}
	for ; i < len(s); i++ {
		or |= uint64(s[i])
	}
	return or&0x8080808080808080 == 0
}

// after reports whether name sorts strictly after prev.
func after(name, prev string) bool {
	if len(name) > 0 && len(prev) > 0 && name[0] != prev[0] {
		return name[0] > prev[0]
	}
	return name > prev
}

// LabelChecker checks the labels of one series given one at a time, in order (a decoder that does
// not keep them in a slice): Reset, then Add each label, then Done. The zero value is ready.
type LabelChecker struct {
	n       int
	prev    string
	hasName bool
	err     error
}

// Reset prepares c for the next series.
func (c *LabelChecker) Reset() { *c = LabelChecker{} }

// Add checks the next label. name must stay valid until the next Add or Reset (it is compared
// with the next one).
func (c *LabelChecker) Add(name, value string) {
	if c.err != nil {
		return
	}
	if err := checkLabel(c.n, c.prev, name, value); err != nil {
		c.err = err
		return
	}
	c.hasName = c.hasName || name == MetricName
	c.prev = name
	c.n++
}

// Done returns the first refusal of the series' labels, or nil.
func (c *LabelChecker) Done() error {
	if c.err == nil && !c.hasName {
		c.err = labelsError("missing_metric_name", "no metric name (no __name__ label)")
	}
	return c.err
}

// quoteTrunc quotes s (escaping invalid UTF-8, so that the result always fits a proto3 string),
// cut to 200 bytes with "…" when longer.
func quoteTrunc(s string) string {
	const max = 200
	if len(s) > max {
		return strconv.Quote(s[:max]) + "…"
	}
	return strconv.Quote(s)
}
