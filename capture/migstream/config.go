package migstream

import (
	"fmt"
	"slices"
)

// Config is the CONFIGURATION section: what the destination checks before
// it loads anything.
type Config struct {
	// Machine is the versioned machine type, e.g. "pc-i440fx-7.2".
	Machine string
	// PageBits is log2 of the target page size when the stream states it
	// (only targets with a variable page size do), else 0.
	PageBits uint32
	// Capabilities lists the migration capabilities that both ends must
	// share; nil when the stream has no such list. Only x-ignore-shared is
	// supported.
	Capabilities []string
	// UUID is the VM's UUID when validate-uuid is on (16 bytes), else nil.
	UUID []byte
}

// Configuration subsections, in the order QEMU writes them.
var configSubsections = []string{
	"configuration/target-page-bits",
	"configuration/capabilities",
	"configuration/uuid",
}

const (
	maxMachineName  = 1024
	maxCapabilities = 64
	capIgnoreShared = "x-ignore-shared"
)

func (c *Config) ignoreShared() bool {
	return c != nil && slices.Contains(c.Capabilities, capIgnoreShared)
}

// readConfig reads the body of a CONFIGURATION section.
func readConfig(r *reader) (*Config, error) {
	n, err := r.u32()
	if err != nil {
		return nil, err
	}
	if n > maxMachineName {
		return nil, fmt.Errorf("machine type name of %d bytes: %w", n, ErrTooLarge)
	}
	name, err := r.next(int(n))
	if err != nil {
		return nil, err
	}
	c := &Config{Machine: string(name)}
	next := 0 // index in configSubsections of the next allowed subsection
	for {
		t, err := r.peekByte()
		if err != nil {
			return nil, err
		}
		if t != secSubsection {
			break
		}
		r.next(1)
		sub, err := r.str8()
		if err != nil {
			return nil, err
		}
		i := slices.Index(configSubsections, sub)
		if i < 0 {
			return nil, fmt.Errorf("subsection %q: %w", sub, ErrUnsupported)
		}
		if i < next {
			return nil, fmt.Errorf("subsection %q out of order or repeated: %w", sub, ErrMalformed)
		}
		next = i + 1
		v, err := r.u32()
		if err != nil {
			return nil, err
		}
		if v != 1 {
			return nil, fmt.Errorf("subsection %q version %d: %w", sub, v, ErrUnsupported)
		}
		switch i {
		case 0:
			if c.PageBits, err = r.u32(); err != nil {
				return nil, err
			}
			if c.PageBits < minPageBits || c.PageBits > maxPageBits {
				return nil, fmt.Errorf("target page bits %d: %w", c.PageBits, ErrUnsupported)
			}
		case 1:
			if c.Capabilities, err = readCapabilities(r); err != nil {
				return nil, err
			}
		case 2:
			p, err := r.next(16)
			if err != nil {
				return nil, err
			}
			c.UUID = slices.Clone(p)
		}
	}
	return c, nil
}

func readCapabilities(r *reader) ([]string, error) {
	n, err := r.u32()
	if err != nil {
		return nil, err
	}
	if n > maxCapabilities {
		return nil, fmt.Errorf("%d capabilities: %w", n, ErrTooLarge)
	}
	caps := make([]string, 0, n)
	for range n {
		s, err := r.str8()
		if err != nil {
			return nil, err
		}
		if s != capIgnoreShared {
			return nil, fmt.Errorf("capability %q: %w", s, ErrUnsupported)
		}
		caps = append(caps, s)
	}
	return caps, nil
}

// appendConfig appends the body of a CONFIGURATION section.
func appendConfig(b []byte, c *Config) []byte {
	b = appendU32(b, uint32(len(c.Machine)))
	b = append(b, c.Machine...)
	sub := func(i int) {
		b = append(b, secSubsection)
		b = appendStr8(b, configSubsections[i])
		b = appendU32(b, 1)
	}
	if c.PageBits != 0 {
		sub(0)
		b = appendU32(b, c.PageBits)
	}
	if c.Capabilities != nil {
		sub(1)
		b = appendU32(b, uint32(len(c.Capabilities)))
		for _, s := range c.Capabilities {
			b = appendStr8(b, s)
		}
	}
	if c.UUID != nil {
		sub(2)
		b = append(b, c.UUID...)
	}
	return b
}

// check reports whether Join can write c so that Parse reads it back equal.
func (c *Config) check() error {
	if len(c.Machine) > maxMachineName {
		return fmt.Errorf("machine type name of %d bytes", len(c.Machine))
	}
	if c.PageBits != 0 && (c.PageBits < minPageBits || c.PageBits > maxPageBits) {
		return fmt.Errorf("target page bits %d", c.PageBits)
	}
	if len(c.Capabilities) > maxCapabilities {
		return fmt.Errorf("%d capabilities", len(c.Capabilities))
	}
	for _, s := range c.Capabilities {
		if s != capIgnoreShared {
			return fmt.Errorf("capability %q", s)
		}
	}
	if c.UUID != nil && len(c.UUID) != 16 {
		return fmt.Errorf("UUID of %d bytes", len(c.UUID))
	}
	return nil
}
