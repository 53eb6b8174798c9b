package pace

import (
	"context"
	"testing"
	"time"
)

func TestPacerLimitsRate(t *testing.T) {
	p := New(1 << 20) // 1 MiB/s
	start := time.Now()
	for i := 0; i < 5; i++ {
		if err := p.Wait(context.Background(), 64<<10); err != nil {
			t.Fatal(err)
		}
	}
	// Four 64 KiB chunks are due before the fifth: at least 250 ms.
	if el := time.Since(start); el < 240*time.Millisecond {
		t.Fatalf("5 x 64 KiB at 1 MiB/s took %v, want >= 250ms", el)
	}
}

func TestPacerUnlimitedAndCancel(t *testing.T) {
	if err := New(0).Wait(context.Background(), 1<<30); err != nil {
		t.Fatal(err)
	}
	p := New(1)
	p.Wait(context.Background(), 1<<20) // now owes a long time
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := p.Wait(ctx, 1); err != context.Canceled {
		t.Fatalf("Wait after cancel = %v, want context.Canceled", err)
	}
}
