//go:build race

package match

// raceEnabled reports whether the race detector is on: it makes the
// retraining of the default model (30,000 persons) too slow for make test.
const raceEnabled = true
