// Package bench measures a whole OpenQHIN network running in one process
// (brokers and participants on loopback, real Raft timers, real mutual TLS),
// and the matcher on its own. qhinctl bench runs its scenarios and prints
// their results.
//
// Each scenario is one function taking an options struct and a [Progress]
// callback and returning a JSON-serializable result that names the machine
// and the parameters it ran with. The machine a scenario runs on is assumed
// to be noisy: wherever two ways of doing one thing are compared (through the
// broker or straight to the members, one goroutine or many), both run in the
// same run, interleaved, and the result reports medians, percentiles and
// their ratios rather than a single pass of each.
//
// The whole network shares the process with the load generator, so CPU time
// and memory are process-wide figures: every result says so where it reports
// them.
package bench
