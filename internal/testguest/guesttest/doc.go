// Package guesttest holds the helpers tests use to build and start the test
// guest of package testguest: they take a testing.TB, skip when QEMU is not
// installed, fail the test on error and clean up after it.
//
// # What it does not do
//
// It is never imported by the ntc binary, the demo or the benchmark harness
// (they use package testguest directly), so that package testing stays out of
// them: `go list -deps ./cmd/ntc` lists no testing.
package guesttest
