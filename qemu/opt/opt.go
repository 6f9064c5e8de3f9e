package opt

import (
	"errors"
	"fmt"
	"strings"
)

// Pair is one key=value element of an option.
type Pair struct {
	Key, Value string
}

// Opts is an option's elements in order.
type Opts []Pair

// ErrSyntax is returned (wrapped) for an option string QEMU would not
// parse either.
var ErrSyntax = errors.New("bad QEMU option syntax")

// MaxLen bounds the option strings Parse reads.
const MaxLen = 64 << 10

// Parse splits s into its elements. A first element without '=' is the
// value of implied (when implied is not ""); any other element without '='
// is a flag, key=on.
func Parse(s, implied string) (Opts, error) {
	if len(s) > MaxLen {
		return nil, fmt.Errorf("%w: option of %d bytes (at most %d)", ErrSyntax, len(s), MaxLen)
	}
	var out Opts
	for i := 0; i < len(s); {
		// A key runs to the first '=' or ','.
		j := i
		for j < len(s) && s[j] != '=' && s[j] != ',' {
			j++
		}
		if j == len(s) || s[j] == ',' {
			// A bare element: the implied key's value (which, being a
			// value, may hold ",,"), or a flag.
			if len(out) == 0 && implied != "" {
				v, next := value(s, i)
				out = append(out, Pair{implied, v})
				i = next
				continue
			}
			if j == i {
				return nil, fmt.Errorf("%w: empty element at byte %d of %q", ErrSyntax, i, s)
			}
			out = append(out, Pair{s[i:j], "on"})
			i = j + 1
			continue
		}
		if j == i {
			return nil, fmt.Errorf("%w: element without a key at byte %d of %q", ErrSyntax, i, s)
		}
		v, next := value(s, j+1)
		out = append(out, Pair{s[i:j], v})
		i = next
	}
	return out, nil
}

// value reads a value from s[i:] up to a single comma and returns it and
// the index after that comma (len(s)+1 at the end).
func value(s string, i int) (string, int) {
	var b strings.Builder
	for ; i < len(s); i++ {
		if s[i] == ',' {
			if i+1 < len(s) && s[i+1] == ',' {
				b.WriteByte(',')
				i++
				continue
			}
			return b.String(), i + 1
		}
		b.WriteByte(s[i])
	}
	return b.String(), len(s) + 1
}

// String writes o in QEMU's syntax with every key explicit; see Encode.
func (o Opts) String() string { s, _ := o.Encode(""); return s }

// Encode writes o in QEMU's syntax. A first element whose key is implied
// is written bare (unless its value holds '=', which would read as a key).
// It fails for a key that is empty or holds '=' or ',', or an empty bare
// value, which would not read back as o.
func (o Opts) Encode(implied string) (string, error) {
	var b strings.Builder
	for i, p := range o {
		if p.Key == "" || strings.ContainsAny(p.Key, "=,") {
			return "", fmt.Errorf("%w: key %q", ErrSyntax, p.Key)
		}
		if i > 0 {
			b.WriteByte(',')
		}
		if i == 0 && implied != "" && p.Key == implied && p.Value != "" && !strings.Contains(p.Value, "=") {
			b.WriteString(Escape(p.Value))
			continue
		}
		b.WriteString(p.Key)
		b.WriteByte('=')
		b.WriteString(Escape(p.Value))
	}
	return b.String(), nil
}

// Get returns key's value, the last one when key repeats (QEMU's rule).
func (o Opts) Get(key string) (string, bool) {
	v, ok := "", false
	for _, p := range o {
		if p.Key == key {
			v, ok = p.Value, true
		}
	}
	return v, ok
}

// Escape doubles the commas of a value.
func Escape(v string) string { return strings.ReplaceAll(v, ",", ",,") }
