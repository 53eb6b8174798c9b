package engine

import (
	"bytes"
	"errors"
	"fmt"
	"testing"
)

func TestEngines(t *testing.T) {
	for _, name := range Names() {
		for _, sync := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/sync=%v", name, sync), func(t *testing.T) {
				dir := t.TempDir()
				db, err := Open(name, dir, sync)
				if err != nil {
					t.Fatal(err)
				}
				val := bytes.Repeat([]byte("v"), 2000)
				for i := 0; i < 100; i++ {
					if err := db.Insert([]byte(fmt.Sprintf("user%03d", i)), val); err != nil {
						t.Fatal(err)
					}
				}
				if err := db.Update([]byte("user007"), []byte("new")); err != nil {
					t.Fatal(err)
				}
				if v, err := db.Read([]byte("user007")); err != nil || string(v) != "new" {
					t.Fatalf("read after update: %q %v", v, err)
				}
				if v, err := db.Read([]byte("user008")); err != nil || !bytes.Equal(v, val) {
					t.Fatalf("read: %d bytes, %v", len(v), err)
				}
				if _, err := db.Read([]byte("nope")); !errors.Is(err, ErrNotFound) {
					t.Fatalf("missing key: %v", err)
				}
				if n, err := db.Scan([]byte("user090"), 50); err != nil || n != 10 {
					t.Fatalf("scan: %d %v", n, err)
				}
				if n, err := db.Scan([]byte("user000"), 5); err != nil || n != 5 {
					t.Fatalf("scan: %d %v", n, err)
				}
				if err := db.Close(); err != nil {
					t.Fatal(err)
				}
				// Reopen: data survived.
				db, err = Open(name, dir, sync)
				if err != nil {
					t.Fatal(err)
				}
				if v, err := db.Read([]byte("user007")); err != nil || string(v) != "new" {
					t.Fatalf("read after reopen: %q %v", v, err)
				}
				if err := db.Close(); err != nil {
					t.Fatal(err)
				}
			})
		}
	}
}
