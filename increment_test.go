package heapkv_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"path/filepath"
	"testing"
	"time"

	"github.com/heapkv/heapkv"
)

// incrValue is key i's value at generation g: inline for every tenth key,
// 4,000 bytes of heap otherwise.
func incrValue(i, g int) []byte {
	n := 4000
	if i%10 == 0 {
		n = 40
	}
	unit := fmt.Appendf(nil, "<%d#%d>", i, g)
	return bytes.Repeat(unit, n/len(unit)+1)[:n]
}

func incrKey(i int) []byte { return fmt.Appendf(nil, "k%05d", i) }

// changeOnePercent rewrites 1% of the keys, deletes a few and adds a few,
// in the database and in the model.
func changeOnePercent(t *testing.T, db *heapkv.DB, model map[string]string, n, gen int) {
	t.Helper()
	rng := rand.New(rand.NewPCG(uint64(gen), 9))
	b := db.NewBatch()
	for range n / 100 {
		i := rng.IntN(n)
		v := incrValue(i, gen)
		b.Put(incrKey(i), v)
		model[string(incrKey(i))] = string(v)
	}
	for range 5 {
		i := rng.IntN(n)
		b.Delete(incrKey(i))
		delete(model, string(incrKey(i)))
		j := n + gen*10 + rng.IntN(10)
		v := incrValue(j, gen)
		b.Put(incrKey(j), v)
		model[string(incrKey(j))] = string(v)
	}
	mustNoErr(t, db.Apply(b, &heapkv.WriteOptions{Sync: true}))
}

func fillIncr(t *testing.T, db *heapkv.DB, n int) map[string]string {
	t.Helper()
	model := map[string]string{}
	b := db.NewBatch()
	for i := range n {
		v := incrValue(i, 0)
		b.Put(incrKey(i), v)
		model[string(incrKey(i))] = string(v)
		if b.Len() == 200 {
			mustNoErr(t, db.Apply(b, &heapkv.WriteOptions{}))
			b = db.NewBatch()
		}
	}
	mustNoErr(t, db.Apply(b, &heapkv.WriteOptions{Sync: true}))
	return model
}

func sameContents(t *testing.T, what string, got, want map[string]string) {
	t.Helper()
	if !maps.Equal(got, want) {
		t.Fatalf("%s: %d keys, want %d, or values differ", what, len(got), len(want))
	}
}

// TestIncrementalBackup: a backup into a directory that holds an earlier
// backup copies what changed (about 1% of the bytes after 1% of the
// values changed) and leaves exactly the source's state.
func TestIncrementalBackup(t *testing.T) {
	root := t.TempDir()
	quiet := slog.New(slog.DiscardHandler)
	src := openTestDB(t, filepath.Join(root, "src"), &heapkv.Options{Logger: quiet})
	const n = 2000
	model := fillIncr(t, src, n)
	dest := filepath.Join(root, "backup")
	full, err := src.Backup(t.Context(), dest, nil)
	mustNoErr(t, err)
	for gen := 1; gen <= 3; gen++ {
		changeOnePercent(t, src, model, n, gen)
		st, err := src.Backup(t.Context(), dest, nil)
		mustNoErr(t, err)
		t.Logf("full %+v; increment %d: %+v (%.2f%% of the full backup's bytes)", full, gen, st, 100*float64(st.Bytes)/float64(full.Bytes))
		if st.Since == 0 || st.Kept < n*8/10 || st.Deleted == 0 || float64(st.Bytes) > 0.025*float64(full.Bytes) {
			t.Fatalf("increment %d: %+v against a full backup of %d bytes", gen, st, full.Bytes)
		}
		cp := openTestDB(t, dest, &heapkv.Options{Logger: quiet})
		sameContents(t, fmt.Sprintf("the copy after increment %d", gen), contents(t, cp), model)
		checkContentsOK(t, cp)
		mustNoErr(t, cp.Close())
	}
	// Since must name the copy's LSN; a copy written to is no base.
	if _, err := src.Backup(t.Context(), dest, &heapkv.ExportOptions{Since: 1}); !errors.Is(err, heapkv.ErrInvalidOptions) {
		t.Fatalf("backup with a wrong Since: %v", err)
	}
	cp := openTestDB(t, dest, &heapkv.Options{Logger: quiet})
	mustNoErr(t, cp.Put([]byte("stray"), []byte("write")))
	mustNoErr(t, cp.Close())
	if _, err := src.Backup(t.Context(), dest, nil); !errors.Is(err, heapkv.ErrInvalidOptions) {
		t.Fatalf("backup into a copy written to since: %v", err)
	}
	// A backup of another database is no base either.
	other := openTestDB(t, filepath.Join(root, "other"), &heapkv.Options{Logger: quiet})
	if _, err := other.Backup(t.Context(), dest, nil); !errors.Is(err, heapkv.ErrInvalidOptions) {
		t.Fatalf("backup of another database into the copy: %v", err)
	}
}

func checkContentsOK(t *testing.T, db *heapkv.DB) {
	t.Helper()
	rep, err := db.Check(context.Background())
	if err != nil || !rep.OK() {
		t.Fatalf("check: %v\n%v", err, rep)
	}
}

// TestIncrementalBackupInterrupted: an increment that stops half-way
// leaves a copy Open refuses; running Backup again finishes it.
func TestIncrementalBackupInterrupted(t *testing.T) {
	root := t.TempDir()
	quiet := slog.New(slog.DiscardHandler)
	src := openTestDB(t, filepath.Join(root, "src"), &heapkv.Options{Logger: quiet})
	const n = 1000
	model := fillIncr(t, src, n)
	dest := filepath.Join(root, "backup")
	_, err := src.Backup(t.Context(), dest, nil)
	mustNoErr(t, err)
	// Change half the keys, so the increment is long; stop it early.
	b := src.NewBatch()
	for i := 0; i < n; i += 2 {
		v := incrValue(i, 7)
		b.Put(incrKey(i), v)
		model[string(incrKey(i))] = string(v)
	}
	mustNoErr(t, src.Apply(b, &heapkv.WriteOptions{Sync: true}))
	ctx, cancel := context.WithTimeout(t.Context(), 150*time.Millisecond)
	defer cancel()
	_, err = src.Backup(ctx, dest, &heapkv.ExportOptions{BytesPerSecond: 4 << 20})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("paced backup stopped by a deadline: %v", err)
	}
	if _, err := heapkv.Open(dest, &heapkv.Options{Logger: quiet}); !errors.Is(err, heapkv.ErrIncompleteBackup) {
		t.Fatalf("open of a copy whose increment stopped: %v, want ErrIncompleteBackup", err)
	}
	if _, err := heapkv.Open(dest, &heapkv.Options{Logger: quiet, ReadOnly: true}); !errors.Is(err, heapkv.ErrIncompleteBackup) {
		t.Fatalf("read-only open of a copy whose increment stopped: %v, want ErrIncompleteBackup", err)
	}
	st, err := src.Backup(t.Context(), dest, nil)
	mustNoErr(t, err)
	t.Logf("finished: %+v", st)
	cp := openTestDB(t, dest, &heapkv.Options{Logger: quiet})
	sameContents(t, "the copy after the rerun", contents(t, cp), model)
}

// TestExportSinceApply: the stream form, Export with Since and
// ApplyIncrement, and the errors of a wrong base or a wrong dump.
func TestExportSinceApply(t *testing.T) {
	root := t.TempDir()
	quiet := slog.New(slog.DiscardHandler)
	src := openTestDB(t, filepath.Join(root, "src"), &heapkv.Options{Logger: quiet})
	const n = 500
	model := fillIncr(t, src, n)
	var base bytes.Buffer
	bst, err := src.Export(t.Context(), &base, nil)
	mustNoErr(t, err)
	_, err = heapkv.Import(t.Context(), filepath.Join(root, "restored"), bytes.NewReader(base.Bytes()), &heapkv.Options{Logger: quiet, BlockSize: 512})
	mustNoErr(t, err)
	changeOnePercent(t, src, model, n, 1)
	var incr bytes.Buffer
	ist, err := src.Export(t.Context(), &incr, &heapkv.ExportOptions{Since: bst.LSN})
	mustNoErr(t, err)
	if _, err := heapkv.Import(t.Context(), filepath.Join(root, "alone"), bytes.NewReader(incr.Bytes()), nil); !errors.Is(err, heapkv.ErrBadDump) {
		t.Fatalf("import of an increment: %v", err)
	}
	if _, err := src.Export(t.Context(), &bytes.Buffer{}, &heapkv.ExportOptions{Since: ist.LSN + 1000}); !errors.Is(err, heapkv.ErrInvalidOptions) {
		t.Fatalf("export since a future LSN: %v", err)
	}
	dst := openTestDB(t, filepath.Join(root, "restored"), &heapkv.Options{Logger: quiet})
	if _, err := dst.ApplyIncrement(t.Context(), bytes.NewReader(base.Bytes())); !errors.Is(err, heapkv.ErrBadDump) {
		t.Fatalf("apply of a full dump: %v", err)
	}
	st, err := dst.ApplyIncrement(t.Context(), bytes.NewReader(incr.Bytes()))
	mustNoErr(t, err)
	t.Logf("base %+v, increment %+v, applied %+v", bst, ist, st)
	sameContents(t, "restored base + increment", contents(t, dst), model)
	// Applying it again changes nothing.
	_, err = dst.ApplyIncrement(t.Context(), bytes.NewReader(incr.Bytes()))
	mustNoErr(t, err)
	sameContents(t, "after applying the increment twice", contents(t, dst), model)
	// A database that lacks a kept key is not the base.
	empty := openTestDB(t, filepath.Join(root, "empty"), &heapkv.Options{Logger: quiet})
	if _, err := empty.ApplyIncrement(t.Context(), bytes.NewReader(incr.Bytes())); !errors.Is(err, heapkv.ErrBadDump) {
		t.Fatalf("apply to a database that is not the base: %v", err)
	}
}

// TestIncrementalBackupCrash takes crash clones all through an
// incremental backup (paced) and checks each: the source opens with its
// state, and the copy opens with the state before or after the increment
// exactly, or is refused with ErrIncompleteBackup.
func TestIncrementalBackupCrash(t *testing.T) {
	e := newMirrorEnv(t, 1)
	db := e.open()
	for i := range 300 {
		e.put(db, fmt.Sprintf("k%03d", i))
	}
	mustNoErr(t, db.Sync())
	_, err := db.Backup(t.Context(), "backup", nil)
	mustNoErr(t, err)
	before := map[string]string{}
	for k, v := range e.model {
		before[k] = string(v)
	}
	for i := range 300 {
		switch i % 3 {
		case 0:
			e.put(db, fmt.Sprintf("k%03d", i))
		case 1:
			e.del(db, fmt.Sprintf("k%03d", i))
		}
	}
	mustNoErr(t, db.Sync())
	after := map[string]string{}
	for k, v := range e.model {
		after[k] = string(v)
	}
	maxClones := 60
	if heapkv.RaceEnabled {
		maxClones = 20 // each clone is reopened and checked: many times slower under the race detector
	}
	clones := e.clonesDuring(maxClones, 3*time.Millisecond, 5, func() error {
		_, err := db.Backup(t.Context(), "backup", &heapkv.ExportOptions{BytesPerSecond: 1 << 20})
		return err
	})
	mustClose(t, db)
	var old, complete, refused int
	for i, mem := range clones {
		o := e.options()
		heapkv.SetFS(o, mem)
		src, err := heapkv.Open(mdbDir, o)
		if err != nil {
			t.Fatalf("clone %d: the source: %v", i, err)
		}
		sameContents(t, fmt.Sprintf("clone %d: the source", i), contents(t, src), after)
		mustClose(t, src)
		cp, err := heapkv.Open("backup", o)
		if errors.Is(err, heapkv.ErrIncompleteBackup) {
			refused++
			continue
		}
		if err != nil {
			t.Fatalf("clone %d: the copy: %v", i, err)
		}
		got := contents(t, cp)
		switch {
		case maps.Equal(got, before):
			old++
		case maps.Equal(got, after):
			complete++
		default:
			t.Fatalf("clone %d: the copy opens with %d keys, neither the state before (%d) nor after (%d)", i, len(got), len(before), len(after))
		}
		checkContentsOK(t, cp)
		mustClose(t, cp)
	}
	t.Logf("clones: %d with the old copy, %d refused, %d with the new copy", old, refused, complete)
	if refused == 0 || complete == 0 {
		t.Fatal("the clones did not fall both inside the increment and after it")
	}
}
