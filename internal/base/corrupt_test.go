package base_test

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"testing"

	"github.com/heapkv/heapkv/internal/base"
)

func TestMarkCorruptNil(t *testing.T) {
	if err := base.MarkCorrupt(nil); err != nil {
		t.Fatalf("MarkCorrupt(nil) = %v, want nil", err)
	}
	if base.IsCorrupt(nil) {
		t.Fatal("IsCorrupt(nil) is true")
	}
}

func TestMarkCorruptKeepsTextAndCauses(t *testing.T) {
	cause := &fs.PathError{Op: "read", Path: "/x", Err: fs.ErrNotExist}
	inner := fmt.Errorf("segment 7: %w", cause)
	m := base.MarkCorrupt(inner)
	if m.Error() != inner.Error() {
		t.Fatalf("text %q, want %q", m.Error(), inner.Error())
	}
	for _, target := range []error{base.ErrCorrupt, inner, cause, fs.ErrNotExist} {
		if !errors.Is(m, target) {
			t.Errorf("errors.Is(marked, %v) is false", target)
		}
	}
	var pe *fs.PathError
	if !errors.As(m, &pe) || pe != cause {
		t.Errorf("errors.As(marked, *fs.PathError) = %v, want the cause", pe)
	}
	if !base.IsCorrupt(m) {
		t.Error("IsCorrupt(marked) is false")
	}
	if base.IsCorrupt(inner) || base.IsCorrupt(cause) {
		t.Error("marking changed the error it marks")
	}
	if errors.Is(m, os.ErrPermission) {
		t.Error("marked error matches an unrelated sentinel")
	}
}

// A package sentinel marked once is found, with the marker, through any
// chain of %w wrapping, and its own text is the message.
func TestMarkedSentinelThroughWrapping(t *testing.T) {
	sentinel := base.MarkCorrupt(errors.New("pkg: corrupt thing"))
	if got := sentinel.Error(); got != "pkg: corrupt thing" {
		t.Fatalf("sentinel text %q", got)
	}
	err := fmt.Errorf("%w: file f at offset %d", sentinel, 12)
	err = fmt.Errorf("open: %w", err)
	err = fmt.Errorf("heapkv: %w", errors.Join(errors.New("other"), err))
	for _, target := range []error{sentinel, base.ErrCorrupt} {
		if !errors.Is(err, target) {
			t.Errorf("errors.Is(%q, %v) is false", err, target)
		}
	}
	if want := "heapkv: other\nopen: pkg: corrupt thing: file f at offset 12"; err.Error() != want {
		t.Errorf("text %q, want %q", err.Error(), want)
	}
	// %v does not wrap: the marker is lost, as with any sentinel.
	if base.IsCorrupt(fmt.Errorf("x: %v", sentinel)) {
		t.Errorf("wrapping with %%v kept the marker")
	}
}

func TestMarkCorruptTwiceIsNoOp(t *testing.T) {
	m := base.MarkCorrupt(errors.New("bad"))
	if m2 := base.MarkCorrupt(m); m2 != m {
		t.Errorf("marking twice made a new error %#v", m2)
	}
	w := fmt.Errorf("ctx: %w", m)
	if w2 := base.MarkCorrupt(w); w2 != w {
		t.Errorf("marking a wrapped marked error made a new error %#v", w2)
	}
	if base.MarkCorrupt(base.ErrCorrupt) != base.ErrCorrupt {
		t.Error("MarkCorrupt(ErrCorrupt) is not ErrCorrupt")
	}
}

func TestCorruptErrorf(t *testing.T) {
	cause := errors.New("checksum 1, want 2")
	err := base.CorruptErrorf("record at %d: %w", 40, cause)
	if want := "record at 40: checksum 1, want 2"; err.Error() != want {
		t.Fatalf("text %q, want %q", err.Error(), want)
	}
	if !errors.Is(err, base.ErrCorrupt) || !errors.Is(err, cause) {
		t.Errorf("CorruptErrorf: Is(ErrCorrupt)=%v Is(cause)=%v", errors.Is(err, base.ErrCorrupt), errors.Is(err, cause))
	}
	if !base.IsCorrupt(fmt.Errorf("outer: %w", err)) {
		t.Errorf("marker lost through %%w wrapping")
	}
}

func TestErrCorruptText(t *testing.T) {
	if got := base.ErrCorrupt.Error(); got != "heapkv: corruption" {
		t.Errorf("ErrCorrupt text %q", got)
	}
	if !base.IsCorrupt(base.ErrCorrupt) {
		t.Error("IsCorrupt(ErrCorrupt) is false")
	}
}

func TestLSNString(t *testing.T) {
	if got := base.LSN(0).String(); got != "0" {
		t.Errorf("LSN(0) = %q", got)
	}
	if got := fmt.Sprint(base.LSN(18446744073709551615)); got != "18446744073709551615" {
		t.Errorf("max LSN = %q", got)
	}
}

func TestAtomicLSN(t *testing.T) {
	var a base.AtomicLSN
	if got := a.Load(); got != 0 {
		t.Fatalf("zero AtomicLSN loads %d", got)
	}
	a.Store(42)
	if got := a.Load(); got != 42 {
		t.Fatalf("Load after Store(42) = %d", got)
	}
}
