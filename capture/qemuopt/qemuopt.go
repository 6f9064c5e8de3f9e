// Package qemuopt is the old name of package qemu/opt, kept so that its
// importers compile until they import qemu/opt themselves.
//
// Deprecated: use github.com/ntc-project/ntc/qemu/opt.
package qemuopt

import "github.com/ntc-project/ntc/qemu/opt"

type (
	// Pair is opt.Pair.
	Pair = opt.Pair
	// Opts is opt.Opts.
	Opts = opt.Opts
)

var (
	// Parse is opt.Parse.
	Parse = opt.Parse
	// Escape is opt.Escape.
	Escape = opt.Escape
	// ErrSyntax is opt.ErrSyntax.
	ErrSyntax = opt.ErrSyntax
)

// MaxLen is opt.MaxLen.
const MaxLen = opt.MaxLen
