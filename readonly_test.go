package heapkv_test

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/heapkv/heapkv"
)

// fileHashes returns a hash of every regular file under each root, by
// path, and of every directory's entry list.
func fileHashes(t *testing.T, roots ...string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, root := range roots {
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() {
				ents, err := os.ReadDir(p)
				if err != nil {
					return err
				}
				names := make([]string, len(ents))
				for i, e := range ents {
					names[i] = e.Name()
				}
				out[p+"/"] = strings.Join(names, ",")
				return nil
			}
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			out[p] = fmt.Sprintf("%x", sha256.Sum256(b))
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// sameFiles fails t unless before and after are equal, naming what differs.
func sameFiles(t *testing.T, before, after map[string]string) {
	t.Helper()
	for p, h := range before {
		if after[p] != h {
			t.Errorf("%s changed (%.12s -> %.12s)", p, h, after[p])
		}
	}
	for p := range after {
		if _, ok := before[p]; !ok {
			t.Errorf("%s appeared", p)
		}
	}
}

// A read-only handle beside another reads everything a read-write one
// wrote (inline and heap values, through Get, ViewValue, iterators,
// snapshots, View and Check), refuses every write with ErrReadOnly, keeps a
// read-write Open out, and changes no file of the database or its mirror.
func TestReadOnly(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "db")
	mirror := filepath.Join(t.TempDir(), "m1")
	quiet := slog.New(slog.DiscardHandler)
	db, err := heapkv.Open(dir, &heapkv.Options{Mirrors: []string{mirror}, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	model := map[string][]byte{}
	for i := range 300 {
		k := fmt.Sprintf("k%03d", i)
		v := bytes.Repeat([]byte{byte(i)}, []int{10, 300, 5000}[i%3]) // inline, heap, several blocks
		if err := db.Put([]byte(k), v); err != nil {
			t.Fatal(err)
		}
		model[k] = v
	}
	for i := 0; i < 300; i += 7 {
		k := fmt.Sprintf("k%03d", i)
		if err := db.Delete([]byte(k)); err != nil {
			t.Fatal(err)
		}
		delete(model, k)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	before := fileHashes(t, dir, mirror)

	ro := &heapkv.Options{ReadOnly: true, Mirrors: []string{mirror, filepath.Join(t.TempDir(), "new")}, Logger: quiet}
	a, err := heapkv.Open(dir, ro)
	if err != nil {
		t.Fatal(err)
	}
	b, err := heapkv.Open(dir, ro)
	if err != nil {
		t.Fatalf("a second read-only handle: %v", err)
	}
	if _, err := heapkv.Open(dir, &heapkv.Options{Logger: quiet}); !errors.Is(err, heapkv.ErrLocked) {
		t.Fatalf("read-write open beside read-only handles: %v, want ErrLocked", err)
	}
	for _, h := range []*heapkv.DB{a, b} {
		checkReadOnlyReads(t, h, model)
		checkReadOnlyWrites(t, h)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	// b still holds the directory after a's Close.
	if _, err := heapkv.Open(dir, &heapkv.Options{Logger: quiet}); !errors.Is(err, heapkv.ErrLocked) {
		t.Fatalf("read-write open beside one read-only handle: %v, want ErrLocked", err)
	}
	checkReadOnlyReads(t, b, model)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	sameFiles(t, before, fileHashes(t, dir, mirror))

	// Once every read-only handle closed, a read-write one opens; a
	// read-only Open beside it is refused.
	w, err := heapkv.Open(dir, &heapkv.Options{Mirrors: []string{mirror}, Logger: quiet})
	if err != nil {
		t.Fatalf("read-write open after the read-only handles closed: %v", err)
	}
	if _, err := heapkv.Open(dir, ro); !errors.Is(err, heapkv.ErrLocked) {
		t.Fatalf("read-only open beside a read-write handle: %v, want ErrLocked", err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}

	// A directory that does not exist is not made.
	missing := filepath.Join(t.TempDir(), "none")
	if _, err := heapkv.Open(missing, ro); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("read-only open of a missing directory: %v, want fs.ErrNotExist", err)
	}
	if _, err := os.Stat(missing); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("a read-only open made %s (%v)", missing, err)
	}
}

func checkReadOnlyReads(t *testing.T, db *heapkv.DB, model map[string][]byte) {
	t.Helper()
	for i := range 300 {
		k := fmt.Sprintf("k%03d", i)
		v, err := db.Get([]byte(k))
		want, ok := model[k]
		switch {
		case ok && (err != nil || !bytes.Equal(v, want)):
			t.Fatalf("get %s: %d bytes, %v", k, len(v), err)
		case !ok && !errors.Is(err, heapkv.ErrNotFound):
			t.Fatalf("get of deleted %s: %v", k, err)
		}
		if ok {
			if err := db.ViewValue([]byte(k), func(v []byte) error {
				if !bytes.Equal(v, want) {
					return fmt.Errorf("%d bytes", len(v))
				}
				return nil
			}); err != nil {
				t.Fatalf("viewvalue %s: %v", k, err)
			}
		}
	}
	snap, err := db.NewSnapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Close()
	it, err := snap.NewIter(nil)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for ok := it.First(); ok; ok = it.Next() {
		v, err := it.Value()
		if err != nil || !bytes.Equal(v, model[string(it.Key())]) {
			t.Fatalf("scan at %s: %v", it.Key(), err)
		}
		n++
	}
	if err := it.Close(); err != nil || n != len(model) {
		t.Fatalf("scan met %d keys of %d: %v", n, len(model), err)
	}
	if err := db.View(func(txn *heapkv.Txn) error {
		_, err := txn.Get([]byte("k001"))
		return err
	}); err != nil {
		t.Fatalf("view: %v", err)
	}
	rep, err := db.Check(t.Context())
	if err != nil || !rep.OK() {
		t.Fatalf("check: %v %v", rep, err)
	}
	if _, err := db.Stats(); err != nil {
		t.Fatalf("stats: %v", err)
	}
}

func checkReadOnlyWrites(t *testing.T, db *heapkv.DB) {
	t.Helper()
	b := db.NewBatch()
	b.Put([]byte("x"), []byte("y"))
	_, beginErr := db.Begin(true)
	_, scrubErr := db.Scrub(t.Context())
	for what, err := range map[string]error{
		"put":    db.Put([]byte("k001"), []byte("new")),
		"delete": db.Delete([]byte("k001")),
		"apply":  db.Apply(b, nil),
		"begin":  beginErr,
		"update": db.Update(func(txn *heapkv.Txn) error {
			t.Error("Update ran its function on a read-only database")
			return nil
		}),
		"checkpoint": db.Checkpoint(),
		"attach":     db.AttachReplica(t.Context(), 1),
		"detach":     db.DetachReplica(1),
		"scrub":      scrubErr,
	} {
		if !errors.Is(err, heapkv.ErrReadOnly) {
			t.Errorf("%s on a read-only handle: %v, want ErrReadOnly", what, err)
		}
	}
	if err := db.Sync(); err != nil {
		t.Errorf("sync on a read-only handle: %v", err)
	}
}

// A database that crashed, its log holding records after the last
// checkpoint, is refused read-only (recovering would write), and nothing
// in it changes; a read-write Open then recovers it and a read-only one
// sees the records.
func TestReadOnlyRefusesRecovery(t *testing.T) {
	mem := vfs.NewCrashableMem()
	opts := &heapkv.Options{CheckpointLogBytes: -1, Logger: slog.New(slog.DiscardHandler)}
	heapkv.SetFS(opts, mem)
	db, err := heapkv.Open("db", opts)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		if err := db.Put(fmt.Appendf(nil, "k%02d", i), bytes.Repeat([]byte{byte(i)}, 1000)); err != nil {
			t.Fatal(err)
		}
	}
	crashed := mem.CrashClone(vfs.CrashCloneCfg{}) // every Put was synced
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	before := fsSnapshot(t, crashed, "db")
	ro := &heapkv.Options{ReadOnly: true, Logger: slog.New(slog.DiscardHandler)}
	heapkv.SetFS(ro, crashed)
	if _, err := heapkv.Open("db", ro); !errors.Is(err, heapkv.ErrReadOnly) || !strings.Contains(err.Error(), "read-write once") {
		t.Fatalf("read-only open of a crashed database: %v, want ErrReadOnly saying to open it read-write", err)
	}
	sameFiles(t, before, fsSnapshot(t, crashed, "db"))

	rw := &heapkv.Options{Logger: slog.New(slog.DiscardHandler)}
	heapkv.SetFS(rw, crashed)
	db, err = heapkv.Open("db", rw)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db, err = heapkv.Open("db", ro)
	if err != nil {
		t.Fatalf("read-only open after recovery: %v", err)
	}
	defer db.Close()
	for i := range 20 {
		if v, err := db.Get(fmt.Appendf(nil, "k%02d", i)); err != nil || !bytes.Equal(v, bytes.Repeat([]byte{byte(i)}, 1000)) {
			t.Fatalf("k%02d after recovery: %d bytes, %v", i, len(v), err)
		}
	}
}

// The read-only lock is shared across processes and excludes writers
// there too: a child process holds the database read-only while this one
// opens it read-only beside it and fails to open it read-write.
func TestReadOnlyAcrossProcesses(t *testing.T) {
	if dir := os.Getenv("HEAPKV_READONLY_CHILD"); dir != "" {
		db, err := heapkv.Open(dir, &heapkv.Options{ReadOnly: true, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			fmt.Println("open:", err)
			os.Exit(1)
		}
		fmt.Println("ready")
		var buf [1]byte
		_, _ = os.Stdin.Read(buf[:]) // until the parent closes stdin
		db.Close()
		os.Exit(0)
	}
	dir := filepath.Join(t.TempDir(), "db")
	db, err := heapkv.Open(dir, &heapkv.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Put([]byte("k"), []byte("v")); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestReadOnlyAcrossProcesses$")
	cmd.Env = append(os.Environ(), "HEAPKV_READONLY_CHILD="+dir)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	child := bufio.NewReader(stdout)
	line, err := child.ReadString('\n') // EOF if the child exits first
	if line != "ready\n" {
		rest, _ := io.ReadAll(child)
		stdin.Close()
		_ = cmd.Wait()
		t.Fatalf("child did not open the database: %q %s (%v)", line, rest, err)
	}
	defer func() {
		stdin.Close()
		rest, _ := io.ReadAll(child)
		if err := cmd.Wait(); err != nil {
			t.Errorf("child: %v: %s", err, rest)
		}
	}()
	if _, err := heapkv.Open(dir, &heapkv.Options{Logger: slog.New(slog.DiscardHandler)}); !errors.Is(err, heapkv.ErrLocked) {
		t.Fatalf("read-write open while another process holds it read-only: %v, want ErrLocked", err)
	}
	ro, err := heapkv.Open(dir, &heapkv.Options{ReadOnly: true, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatalf("read-only open beside another process's read-only handle: %v", err)
	}
	if v, err := ro.Get([]byte("k")); err != nil || string(v) != "v" {
		t.Fatalf("get: %q %v", v, err)
	}
	if err := ro.Close(); err != nil {
		t.Fatal(err)
	}
}
