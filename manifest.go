package heapkv

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/heapkv/heapkv/alloc"
	"github.com/heapkv/heapkv/internal/base"
	"github.com/heapkv/heapkv/internal/filehdr"
	"github.com/heapkv/heapkv/mirror"
)

// A MANIFEST names the current checkpoint. A new one is written as
// MANIFEST-<seq>.tmp, synced, renamed to MANIFEST-<seq> and the directory
// synced, so the highest-numbered MANIFEST is always complete; older ones are
// deleted afterwards. Wire format (fields are never changed, reordered or
// removed; see "Versions" below):
//
//	+-------------------+------------------------------------------+--------+
//	| filehdr.Header    | body                                     | CRC-32C|
//	| 32 B (kind "MF")  |                                          | of body|
//	+-------------------+------------------------------------------+--------+
//
//	body:
//	+-----+---------------+-----------+---------------+------+-------------+--------------+----------------+
//	| seq | checkpointLSN | blockSize | segmentBlocks | keys | inlineBytes | heapRawBytes | heapStoredBytes|
//	| u64 | u64           | u32       | u32           | u64  | u64         | u64          | u64            |
//	+-----+---------------+-----------+---------------+------+-------------+--------------+----------------+
//	| nReplicas uvarint | nReplicas x (pathLen uvarint, path) |
//	+-------------------+--------------------------------------+
//	| replica states (optional)                                              |
//	| nReplicas x (state 1 B, flags 1 B, staleLSN uvarint) | tracking 1 B    |
//	+-------------------------------------------------------------------------+
//
// All integers little-endian. Replica paths are relative to the database
// directory unless absolute (mirrors elsewhere). The allocation snapshot of
// the checkpoint is the file allocFileName(checkpointLSN).
//
// The replica states section is present only when some replica is not in
// sync (and then always ends the body): state is a mirror.State (0 in sync,
// 1 stale, 2 resyncing, which reads back as stale), flags bit 0 marks a
// replica stale by DetachReplica, staleLSN is the LSN a stale replica
// holds, and tracking is 1 if trackingFileName(checkpointLSN) holds the
// tracking and sync bitmaps of the replicas not in sync (replicas.go). A
// MANIFEST without the section (every MANIFEST written before mirrors had
// states) means every replica is in sync.
//
// Versions. A section may be appended to the end of the body without
// bumping filehdr.Version only if both hold: a file without it means
// exactly what it meant before (so every older file reads correctly), and
// a reader that predates it refuses a file that has it rather than
// misreading it (every version so far rejects trailing bytes, naming
// them). The replica states section was added under this rule. A database
// whose MANIFEST holds a section cannot be opened by an older heapkv; any
// other change bumps filehdr.Version, which older readers refuse by name.
type manifest struct {
	seq           uint64
	checkpointLSN base.LSN
	blockSize     uint32
	segmentBlocks uint32
	counters      counters
	replicas      []string
	meta          []replicaMeta // parallel to replicas; nil: every replica in sync
	tracking      bool          // trackingFileName(checkpointLSN) exists
}

// manifestState is the installed MANIFEST; mu serialises installing
// MANIFESTs (checkpoints and replica-table updates: persistReplicas).
type manifestState struct {
	mu    sync.Mutex
	last  manifest // the installed MANIFEST; seq 0 while creating
	paths []string // replica paths as the MANIFEST records them, by id
}

// geometry is the heap geometry m records.
func (m *manifest) geometry() alloc.Geometry {
	return alloc.Geometry{BlockSize: int(m.blockSize), SegmentBlocks: int(m.segmentBlocks)}
}

// replicaMeta is the durable state of one replica.
type replicaMeta struct {
	state    mirror.State
	detached bool
	staleLSN base.LSN
}

const metaDetached = 1 << 0

// hasStates reports whether the replica states section is written.
func (m *manifest) hasStates() bool {
	return m.tracking || slices.ContainsFunc(m.meta, func(r replicaMeta) bool { return r != replicaMeta{} })
}

func boolByte(b bool) byte {
	if b {
		return 1
	}
	return 0
}

func (m *manifest) encode(id filehdr.DBID) []byte {
	b := make([]byte, filehdr.Size, 128)
	filehdr.Header{Kind: filehdr.KindManifest, Version: filehdr.Version, DBID: id}.Encode(b)
	b = binary.LittleEndian.AppendUint64(b, m.seq)
	b = binary.LittleEndian.AppendUint64(b, uint64(m.checkpointLSN))
	b = binary.LittleEndian.AppendUint32(b, m.blockSize)
	b = binary.LittleEndian.AppendUint32(b, m.segmentBlocks)
	for _, c := range []int64{m.counters.keys, m.counters.inlineBytes, m.counters.heapRawBytes, m.counters.heapStoredBytes} {
		b = binary.LittleEndian.AppendUint64(b, uint64(c))
	}
	b = binary.AppendUvarint(b, uint64(len(m.replicas)))
	for _, p := range m.replicas {
		b = binary.AppendUvarint(b, uint64(len(p)))
		b = append(b, p...)
	}
	if m.hasStates() {
		for i := range m.replicas {
			var r replicaMeta
			if i < len(m.meta) {
				r = m.meta[i]
			}
			var flags byte
			if r.detached {
				flags |= metaDetached
			}
			b = append(b, byte(r.state), flags)
			b = binary.AppendUvarint(b, uint64(r.staleLSN))
		}
		b = append(b, boolByte(m.tracking))
	}
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b[filehdr.Size:], castagnoli))
}

// decodeManifest parses a MANIFEST; id, if not zero, must match. Errors
// describe the defect; the caller wraps ErrCorrupt with the file name.
func decodeManifest(b []byte, id filehdr.DBID) (manifest, filehdr.DBID, error) {
	var m manifest
	h, err := filehdr.Check(b, filehdr.KindManifest, id)
	if err != nil {
		return m, filehdr.DBID{}, err
	}
	if len(b) < filehdr.Size+4 {
		return m, h.DBID, fmt.Errorf("manifest truncated at %d bytes", len(b))
	}
	body, sum := b[filehdr.Size:len(b)-4], binary.LittleEndian.Uint32(b[len(b)-4:])
	if got := crc32.Checksum(body, castagnoli); got != sum {
		return m, h.DBID, fmt.Errorf("manifest checksum %08x, want %08x", got, sum)
	}
	r := byteReader{b: body}
	m.seq = r.uint64()
	m.checkpointLSN = base.LSN(r.uint64())
	m.blockSize = r.uint32()
	m.segmentBlocks = r.uint32()
	m.counters.keys = int64(r.uint64())
	m.counters.inlineBytes = int64(r.uint64())
	m.counters.heapRawBytes = int64(r.uint64())
	m.counters.heapStoredBytes = int64(r.uint64())
	n := r.uvarint()
	if r.err == nil && n > uint64(len(r.b)) {
		return m, h.DBID, fmt.Errorf("manifest claims %d replicas", n)
	}
	for i := uint64(0); i < n && r.err == nil; i++ {
		m.replicas = append(m.replicas, string(r.bytes(r.uvarint())))
	}
	if r.err == nil && len(r.b) > 0 {
		m.meta = make([]replicaMeta, len(m.replicas))
		for i := range m.meta {
			state, flags := r.byte(), r.byte()
			m.meta[i] = replicaMeta{state: mirror.State(state), detached: flags&metaDetached != 0, staleLSN: base.LSN(r.uvarint())}
			if r.err == nil && (state > byte(mirror.Resyncing) || flags&^metaDetached != 0) {
				return m, h.DBID, fmt.Errorf("manifest: replica %d has state %d, flags %#x", i, state, flags)
			}
		}
		switch t := r.byte(); {
		case r.err != nil:
		case t > 1:
			return m, h.DBID, fmt.Errorf("manifest: tracking flag %d", t)
		default:
			m.tracking = t == 1
		}
		if r.err == nil && !m.hasStates() {
			return m, h.DBID, fmt.Errorf("manifest: replica states section says nothing")
		}
	}
	if r.err != nil {
		return m, h.DBID, fmt.Errorf("manifest body: %w", r.err)
	}
	if len(r.b) != 0 {
		return m, h.DBID, fmt.Errorf("manifest has %d trailing bytes", len(r.b))
	}
	if err := m.geometry().Validate(); err != nil {
		return m, h.DBID, fmt.Errorf("manifest geometry: %w", err)
	}
	if len(m.replicas) == 0 {
		return m, h.DBID, fmt.Errorf("manifest lists no heap replica")
	}
	return m, h.DBID, nil
}

// listManifests returns the sequence numbers of the MANIFEST files in dir,
// ascending.
func listManifests(fs vfs.FS, dir string) ([]uint64, error) {
	names, err := fs.List(dir)
	if err != nil {
		return nil, fmt.Errorf("heapkv: list %s: %w", dir, err)
	}
	var seqs []uint64
	for _, n := range names {
		rest, ok := strings.CutPrefix(n, manifestPrefix)
		if !ok {
			continue
		}
		if seq, err := strconv.ParseUint(rest, 10, 64); err == nil {
			seqs = append(seqs, seq)
		}
	}
	slices.Sort(seqs)
	return seqs, nil
}

// installManifestLocked writes m as the next MANIFEST and removes the
// previous one. A write that found the file system full is ErrDiskFull, as
// every write a checkpoint makes. REQUIRES: db.manifest.mu held.
func (db *DB) installManifestLocked(m manifest) error {
	prev := db.manifest.last.seq
	m.seq = prev + 1
	if err := writeFileAtomic(db.fs, db.dir, manifestFileName(m.seq), m.encode(db.id)); err != nil {
		return diskError(fmt.Errorf("heapkv: install manifest: %w", err))
	}
	db.manifest.last = m
	if prev != 0 {
		if err := db.fs.Remove(db.fs.PathJoin(db.dir, manifestFileName(prev))); err != nil {
			db.logger.Warn("removing the previous MANIFEST", "err", err)
		}
	}
	return nil
}
