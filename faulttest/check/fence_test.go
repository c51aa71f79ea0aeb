package check

import "testing"

func TestCheckFencing(t *testing.T) {
	owners := map[string][]string{"s1": {"a", "b", "d"}, "s2": {"a", "b", "c"}}
	own := func(s string) []string { return owners[s] }
	ack := func(s, m string, stamp uint64) FenceAck { return FenceAck{Series: s, Member: m, Stamp: stamp} }

	// Fenced as it should be: s1 was refused by c (placed on a, b, c by a stale ring) and retried
	// on d; s2 never moved. A failed write's ack by a non-owner is not judged.
	good := []FenceAck{ack("s1", "a", 9), ack("s1", "b", 9), ack("s1", "d", 9), ack("s1", "d", 9),
		ack("s2", "a", 9), ack("s2", "c", 5), ack("s3", "c", 5)}
	if r := CheckFencing([]string{"s1", "s2"}, good, own, 2); !r.Valid() || r.Acks != 5 || r.Writes != 2 {
		t.Fatalf("every ack from an owner, yet: %s", r.String())
	}

	// Fencing off: c, no longer an owner of s1, took the stale write.
	stale := []FenceAck{ack("s1", "a", 0), ack("s1", "b", 0), ack("s1", "c", 0)}
	if r := CheckFencing([]string{"s1"}, stale, own, 2); r.Valid() || r.NonOwnerAcks != 1 || r.UnderOwned != 0 {
		t.Fatalf("an ack from a non-owner passed: %s", r.String())
	}

	// Only one owner behind the acknowledgement.
	thin := []FenceAck{ack("s1", "a", 0), ack("s1", "c", 0)}
	if r := CheckFencing([]string{"s1"}, thin, own, 2); r.Valid() || r.UnderOwned != 1 || len(r.Examples) != 2 {
		t.Fatalf("a write acknowledged by one owner passed: %s", r.String())
	}
}
