//go:build race

package ringstate

// raceEnabled is true under -race, where the slowest ring-growing tests use fewer members.
const raceEnabled = true
