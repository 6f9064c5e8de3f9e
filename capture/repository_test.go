package capture

import (
	"errors"
	"testing"
)

// TestOpenRepositoryOneCheckpointerASet: a second checkpointer of a set is
// refused with ErrBusy at once, and opens once the first has closed.
func TestOpenRepositoryOneCheckpointerASet(t *testing.T) {
	dir := t.TempDir()
	first, err := OpenRepository(t.Context(), dir, DefaultSet)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := OpenRepository(t.Context(), dir, DefaultSet); !errors.Is(err, ErrBusy) {
		t.Fatalf("second OpenRepository of the set: %v, want ErrBusy", err)
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	second, err := OpenRepository(t.Context(), dir, DefaultSet)
	if err != nil {
		t.Fatalf("OpenRepository after the first closed: %v", err)
	}
	if err := second.Close(); err != nil {
		t.Fatal(err)
	}
}
