package distributor

// The series hash decides which ingesters own a series, for as long as the series exists: changing
// it moves every series to other ingesters (their data would be split across old and new owners).
// It is frozen; this is its exact definition.
//
// hash = FNV-1a, 32 bits (offset basis 2166136261, prime 16777619), over the bytes
//
//	tenant 0xFF  name_1 0xFF value_1 0xFF  name_2 0xFF value_2 0xFF  ...
//
// where the labels are the series' labels after normalize (empty values dropped, sorted by name, no
// duplicate names — validation refused those). The 0xFF separators make the encoding unambiguous:
// 0xFF never occurs in valid UTF-8, label names are ASCII, values are validated as UTF-8, and tenant
// ids are ASCII. So {a="bc"} and {ab="c"} differ, and so do tenant "a" with {b=...} and tenant "ab".
//
// The tenant is part of the hash so that the same series of two tenants lands on different ingesters
// (tenants spread their load independently), as in Cortex's ShardByAllLabels. FNV-1a is Cortex's and
// Mimir's series hash too; it is computed here inline over strings, without allocating. (xxhash is
// only an indirect dependency of this module; FNV-1a avoids making it a direct one for this.)
const (
	fnvOffset32 = 2166136261
	fnvPrime32  = 16777619
	hashSep     = 0xFF
)

func fnvAddString(h uint32, s string) uint32 {
	for i := 0; i < len(s); i++ {
		h ^= uint32(s[i])
		h *= fnvPrime32
	}
	return h
}

func fnvAddByte(h uint32, b byte) uint32 {
	h ^= uint32(b)
	h *= fnvPrime32
	return h
}

// SeriesHash returns the placement hash of a series of tenant with the given normalized labels (see
// the definition above).
func SeriesHash(tenant string, ls []Label) uint32 {
	h := uint32(fnvOffset32)
	h = fnvAddString(h, tenant)
	h = fnvAddByte(h, hashSep)
	for _, l := range ls {
		h = fnvAddString(h, l.Name)
		h = fnvAddByte(h, hashSep)
		h = fnvAddString(h, l.Value)
		h = fnvAddByte(h, hashSep)
	}
	return h
}
