package testguest

// TickLine matches a tick on the serial console, for the tests of package
// testguest_test (which use package guesttest, so cannot be package
// testguest).
var TickLine = tickLine
