// Package mirror presents the value heap as a block device kept on one or
// more replica files, and keeps the replicas in step: the write-intent
// (tracking) bitmaps, resumable resyncs, verified reads that repair a bad
// copy, and the state machine of DESIGN "Mirrors". Callers address the
// device in blocks of a fixed size; the package knows nothing of keys,
// values, allocation or the log (it is told which blocks are allocated and
// which LSN is durable through callbacks).
//
// A replica is one file. It starts with a header area of H bytes; block b
// of the device lives at byte offset H + b*BlockSize:
//
//	+-----------------------------+---------+---------+-----
//	| header area                 | block 0 | block 1 | ...
//	| filehdr (32 B) | replica    |         |         |
//	| header (see header.go)      |         |         |
//	+-----------------------------+---------+---------+-----
//	0                             H         H+BlockSize
//
// H is one block for block sizes of 512 bytes and more (the layout every
// database made before smaller blocks existed has), and 4 KiB for block
// sizes below 512, so that the blocks of a small-block heap start on a page
// boundary (HeaderArea).
//
// The file grows on demand as blocks are written (reading an unwritten block
// returns zeros).
//
// # Replica states
//
//	InSync --(write/sync error, Detach)--> Stale --(Resync)--> Resyncing --> InSync
//	                                         ^                     |
//	                                         +--(cancel, error)----+
//
// Reads are served only by in-sync replicas. Writes go to every replica that
// is in sync or resyncing, and succeed while at least one in-sync replica
// accepts them; an in-sync replica that fails a write or a sync while
// another succeeds goes stale. A stale replica has a tracking bitmap (the
// blocks written since it went stale; nil means "unknown: copy everything")
// and a sync bitmap (blocks already brought up to date by a resync). Every
// write marks the tracking bitmap of each stale replica and clears those
// blocks from its sync bitmap. Resync copies, in increasing block order,
// every block that is marked, not yet synced and still allocated, from an
// in-sync replica; a resync that stops early keeps its sync bitmap and the
// next one resumes. Every in-sync replica is a valid source: in sync means it
// holds the current bytes of every allocated block.
//
// A replica that goes stale because of an I/O error may have lost every
// write since its last successful sync. The set therefore remembers the
// blocks written since the last Sync began (dirty spans) and marks them in
// the tracking bitmap of a replica that fails, whose stale LSN is the LSN of
// its last successful Sync (Config.LSN).
//
// # Locking
//
// Set.mu is held shared by every write, sync, copy and repair for the whole
// of its I/O and exclusively by every state change, so a state change never
// overlaps an I/O that saw the old state. Reads take no lock: they use an
// immutable view (the files of the in-sync replicas) loaded atomically. While
// a resync runs, writers and the copier also take stripe locks over the
// blocks they touch, so the copier can never write older bytes over a block
// that a foreground write has just updated.
package mirror

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/heapkv/heapkv/internal/base"
	"github.com/heapkv/heapkv/internal/filehdr"
	"github.com/heapkv/heapkv/internal/vfsutil"
)

// ErrCorrupt marks a replica file whose header cannot be trusted. It is
// marked with base.MarkCorrupt, so errors wrapping it also satisfy
// errors.Is(err, base.ErrCorrupt).
var ErrCorrupt = base.MarkCorrupt(errors.New("mirror: corrupt replica"))

// ErrNoReplica is returned when no replica can take a write or serve a read.
var ErrNoReplica = errors.New("mirror: no usable replica")

// ErrClosed is returned by every method after Close.
var ErrClosed = errors.New("mirror: closed")

// ErrUnavailable is returned by Reopen and Resync when a replica's file or
// directory is not there.
var ErrUnavailable = errors.New("mirror: replica unavailable")

// ErrBusy is returned when a replica is resyncing and the operation needs it
// not to be.
var ErrBusy = errors.New("mirror: replica is resyncing")

// ErrNoGoodCopy is returned by ReadVerified when no in-sync replica holds a
// copy that the caller's check accepts.
var ErrNoGoodCopy = errors.New("mirror: no good copy")

// Config describes the device shared by all replicas.
type Config struct {
	FS        vfs.FS
	DBID      filehdr.DBID
	BlockSize int
	Logger    *slog.Logger // nil means slog.Default()

	// LSN, if set, returns an LSN all of whose writes have been issued
	// before the call (heapkv: the last LSN applied). Sync records it as
	// the LSN each replica that synced holds durably; a replica that fails
	// later goes stale at that LSN.
	LSN func() base.LSN

	// OnStateChange, if set, is called after replicas changed state, outside
	// the set's locks, before the call that changed them returns, and by
	// every Sync while a change is unacknowledged. It must make the replica
	// table (Status) durable; its error is returned by that call. Calls are
	// serialised.
	OnStateChange func() error

	// MapReads makes ReadMapped read through a memory map of the first
	// in-sync replica's file (mapped.go), when FS gives files a descriptor
	// (the operating system's file system does; MemFS does not). On Linux
	// a goroutine of the set then maps the file's cached pages, and the
	// pages writes add, ahead of reads (populate.go).
	MapReads bool

	// ReadOnly opens the replica files read-only, and reads that find a
	// bad copy do not rewrite it (ReadVerified serves a good copy and
	// reports the bad one unrepaired). The caller writes nothing.
	ReadOnly bool
}

// State is the state of one replica.
type State uint8

// The replica states.
const (
	InSync    State = 0 // holds the current bytes of every allocated block
	Stale     State = 1 // missed writes; its tracking bitmap says which
	Resyncing State = 2 // being brought up to date; written, not read
)

// String returns the state's name: in-sync, stale or resyncing.
func (s State) String() string {
	switch s {
	case InSync:
		return "in-sync"
	case Stale:
		return "stale"
	case Resyncing:
		return "resyncing"
	}
	return fmt.Sprintf("State(%d)", uint8(s))
}

// Set is the heap device: replica files holding the same blocks. Its
// methods are safe for concurrent use.
type Set struct {
	cfg Config

	// mu orders I/O against state changes (see the package comment): held
	// shared for the duration of every write, sync, copy and repair,
	// exclusively to change a replica's state. It guards the fields marked
	// "guarded by Set.mu" in replica, and copiers.
	mu       sync.RWMutex
	replicas []*replica // fixed after Open/Create
	copiers  int        // resyncs running; guarded by mu
	retired  []*mapping // mappings no view names any more; guarded by mu

	mapFaults atomic.Int64 // ReadMapped calls that faulted (mapped.go)
	pop       *populator   // maps pages ahead of reads (populate.go); nil if none; set by finishOpen

	view    atomic.Pointer[view] // rebuilt under mu held exclusively
	version atomic.Uint64        // bumped (under mu) on every state change

	// dirtyMu guards dirty and syncing, the blocks written since the
	// running (syncing) and the next (dirty) Sync began.
	dirtyMu sync.Mutex
	dirty   []span
	syncing []span

	// syncMu serialises Sync calls so that a caller that arrives while a
	// sync is running gets a sync that started after its own writes.
	syncMu sync.Mutex

	// ackMu serialises OnStateChange calls and guards acked, the version
	// OnStateChange last made durable.
	ackMu sync.Mutex
	acked uint64

	// stripes serialise, while a resync runs, the copier's read-then-write
	// of a unit of stripeBlocks blocks with foreground writes to the same
	// unit; stripe i guards the units u with u%nStripes == i.
	stripes [nStripes]sync.Mutex
	// stripeBlocks is how many blocks make a stripe unit (stripeBytes of
	// heap, at least one block), which is also the largest copy chunk.
	// Set by newSet.
	stripeBlocks uint64
	// headerBytes is HeaderArea(cfg.BlockSize), where block 0 starts. Set
	// by newSet.
	headerBytes int64

	// written changes after every write to a replica file (WriteAt, a
	// resync's copy, a repair) and every new view. Sync reads it before
	// its fsyncs; syncedGen, guarded by syncMu, is the value read by the
	// last Sync that succeeded on every writable replica. A Sync that
	// finds written still at syncedGen has nothing to flush and skips the
	// fsyncs: a group of inline values costs one fsync (the log's), not two.
	written   atomic.Uint64
	syncedGen uint64

	wb        wbState      // regions written since the last WriteBack (writeback.go)
	wbStarted atomic.Int64 // StartWriteBack calls

	syncs  atomic.Int64 // completed fsyncs across replicas
	closed atomic.Bool
}

const (
	nStripes    = 64
	stripeBytes = 1 << 20 // bytes per stripe unit (Set.stripeBlocks)
)

// span is a run of blocks written since a Sync began.
type span struct {
	block uint64
	n     int
}

// replica is one file of the set.
type replica struct {
	id   int
	path string

	// Guarded by Set.mu.
	f        vfs.File // nil while unavailable
	state    State
	staleLSN base.LSN  // LSN it holds (valid while not in sync)
	detached bool      // made stale by Detach: not attached automatically
	track    *blockSet // blocks written since tracking began; nil: all of them
	trackLSN base.LSN  // LSN the tracking began at
	synced   *blockSet // blocks up to date (resync progress); nil while in sync
	cause    string    // why it is stale
	owned    bool      // a Resync call owns the replica
	mapped   *mapping  // the mapping of f, if made (mapped.go)

	// wbErr is the first error of a WriteBack on f that no Sync reported
	// yet (writeback.go). Written under Set.syncMu with Set.mu held
	// shared; read under Set.syncMu, or Set.mu held exclusively.
	wbErr error

	durable  atomic.Uint64 // LSN of its last successful Sync while in sync
	copied   atomic.Int64  // blocks copied by the running or last resync
	source   atomic.Int64  // source replica of the running or last resync, -1 none
	full     atomic.Bool   // the running or last resync was a full copy
	readErrs atomic.Int64  // reads of this replica that failed
	repairs  atomic.Int64  // bad copies on this replica rewritten
	badSeen  atomic.Int64  // copies on this replica found bad
}

// member is a replica and the file it had when a view was built.
type member struct {
	r *replica
	f vfs.File
}

// view is an immutable picture of who is read and written, rebuilt on every
// state change.
type view struct {
	readable []member   // in sync, file open, in id order
	writable []member   // in sync or resyncing, file open
	stale    []*replica // stale: writes mark their tracking bitmaps
	copying  bool       // a resync runs: writes take stripe locks
	multi    bool       // several replicas: remember dirty spans
	mapped   *mapping   // readable[0]'s file mapped (Config.MapReads), or nil
}

// publishLocked rebuilds the view. REQUIRES: s.mu held exclusively.
func (s *Set) publishLocked() {
	s.written.Add(1) // a replica may have joined the writable set
	v := &view{copying: s.copiers > 0, multi: len(s.replicas) > 1}
	for _, r := range s.replicas {
		switch {
		case r.state == Stale:
			v.stale = append(v.stale, r)
		case r.f == nil:
		case r.state == InSync:
			v.readable = append(v.readable, member{r, r.f})
			v.writable = append(v.writable, member{r, r.f})
		case r.state == Resyncing:
			v.writable = append(v.writable, member{r, r.f})
		}
	}
	if s.cfg.MapReads && len(v.readable) > 0 {
		v.mapped = s.mapFor(v.readable[0].r)
	}
	old := s.view.Swap(v)
	if s.pop != nil && (old == nil || old.mapped != v.mapped) {
		s.pop.kick() // populate the new mapping
	}
}

// changedLocked records a state change. REQUIRES: s.mu held exclusively.
func (s *Set) changedLocked() {
	s.version.Add(1)
	s.publishLocked()
}

// ack calls OnStateChange if a state change is not yet acknowledged.
func (s *Set) ack() error {
	if s.cfg.OnStateChange == nil {
		return nil
	}
	s.ackMu.Lock()
	defer s.ackMu.Unlock()
	v := s.version.Load()
	if v == s.acked {
		return nil
	}
	if err := s.cfg.OnStateChange(); err != nil {
		return fmt.Errorf("mirror: record replica states: %w", err)
	}
	s.acked = v
	return nil
}

// Version returns a number that changes whenever a replica changes state.
func (s *Set) Version() uint64 { return s.version.Load() }

// Create makes new replica files at paths (which must not exist), writes and
// syncs their headers, syncs their directories, and returns the open set
// with every replica in sync.
func Create(cfg Config, paths []string) (*Set, error) {
	s, err := newSet(cfg, len(paths))
	if err != nil {
		return nil, err
	}
	for i, p := range paths {
		if _, err := cfg.FS.Stat(p); err == nil {
			s.closeFiles()
			return nil, fmt.Errorf("mirror: create replica %d: %s already exists", i, p)
		}
	}
	for i, p := range paths {
		f, err := createFile(cfg, p, i)
		if err != nil {
			s.closeFiles()
			return nil, err
		}
		s.replicas = append(s.replicas, &replica{id: i, path: p, f: f, state: InSync})
	}
	s.finishOpen()
	return s, nil
}

// createFile creates (or truncates) a replica file and makes its header
// durable.
func createFile(cfg Config, p string, id int) (vfs.File, error) {
	f, err := cfg.FS.Create(p, vfs.WriteCategoryUnspecified)
	if err == nil {
		// Reopen read-write so that WriteAt is supported.
		if err = f.Close(); err == nil {
			f, err = cfg.FS.OpenReadWrite(p, vfs.WriteCategoryUnspecified)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("mirror: create replica %d: %w", id, err)
	}
	if _, err := f.WriteAt(encodeHeader(cfg, id), 0); err != nil {
		f.Close()
		return nil, fmt.Errorf("mirror: write header of %s: %w", p, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return nil, fmt.Errorf("mirror: sync header of %s: %w", p, err)
	}
	if err := vfsutil.SyncDir(cfg.FS, cfg.FS.PathDir(p)); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

func newSet(cfg Config, n int) (*Set, error) {
	if cfg.FS == nil {
		return nil, errors.New("mirror: Config.FS is nil")
	}
	if cfg.BlockSize < headerSize || cfg.BlockSize&(cfg.BlockSize-1) != 0 {
		return nil, fmt.Errorf("mirror: block size %d is not a power of two >= %d", cfg.BlockSize, headerSize)
	}
	if n == 0 {
		return nil, errors.New("mirror: no replica paths")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Set{cfg: cfg, stripeBlocks: uint64(max(1, stripeBytes/cfg.BlockSize)), headerBytes: HeaderArea(cfg.BlockSize)}, nil
}

// finishOpen publishes the first view; state changes made while opening
// stay unacknowledged.
func (s *Set) finishOpen() {
	for _, r := range s.replicas {
		r.source.Store(-1)
	}
	s.acked = 1
	s.version.Add(1)
	s.mu.Lock()
	s.publishLocked()
	s.mu.Unlock()
	s.startPopulator()
}

// offset returns the byte offset of block in every replica file.
func (s *Set) offset(block uint64) int64 {
	return s.headerBytes + int64(block)*int64(s.cfg.BlockSize)
}

// BlockSize returns the device's block size in bytes.
func (s *Set) BlockSize() int { return s.cfg.BlockSize }

// Replicas returns the number of replicas, in any state.
func (s *Set) Replicas() int { return len(s.replicas) }

// InSync returns the number of replicas that are in sync and readable.
func (s *Set) InSync() int { return len(s.view.Load().readable) }

// Syncs returns how many replica fsyncs have completed.
func (s *Set) Syncs() int64 { return s.syncs.Load() }

// FileSize returns the size in bytes of the first in-sync replica's file.
func (s *Set) FileSize() (int64, error) {
	v := s.view.Load()
	if len(v.readable) == 0 {
		return 0, ErrNoReplica
	}
	m := v.readable[0]
	fi, err := m.f.Stat()
	if err != nil {
		return 0, fmt.Errorf("mirror: stat %s: %w", m.r.path, err)
	}
	return fi.Size(), nil
}

// Close closes every replica file. It does not sync.
func (s *Set) Close() error {
	if s.closed.Swap(true) {
		return ErrClosed
	}
	s.stopPopulator()
	s.mu.Lock()
	defer s.mu.Unlock()
	err := s.closeFiles()
	s.view.Store(&view{})
	s.unmapAll()
	return err
}

func (s *Set) closeFiles() error {
	var first error
	for _, r := range s.replicas {
		if r.f == nil {
			continue
		}
		if err := r.f.Close(); err != nil && first == nil {
			first = fmt.Errorf("mirror: close %s: %w", r.path, err)
		}
		r.f = nil
	}
	return first
}
