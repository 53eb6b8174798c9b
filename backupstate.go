package heapkv

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"

	"github.com/cockroachdb/errors/oserror"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/heapkv/heapkv/internal/base"
	"github.com/heapkv/heapkv/internal/filehdr"
)

// The BACKUP file. Backup writes it into the copy it makes, saying which
// database the copy came from and as of which LSN, so that a later
// incremental Backup into the same directory knows where to start and can
// refuse a directory that is not a backup of the source. While an
// increment is applied it says so, and Open refuses the directory
// (ErrIncompleteBackup) until a rerun of the incremental Backup finishes:
// a crash leaves the copy at its old state, complete, or refused.
//
// Layout (written with writeFileAtomic; never change, add a version):
//
//	+-----------------+--------+------------+-------------+-----------+--------+
//	| filehdr "BK"    | state  | source ID  | source LSN  | own LSN   | CRC    |
//	| 32 B (copy's ID)| 1 B    | 16 B       | u64 LE      | u64 LE    | u32 LE |
//	+-----------------+--------+------------+-------------+-----------+--------+
//	0                 32       33           49            57          65       69
//
// state is backupComplete or backupApplying; source LSN is the snapshot the
// copy holds (complete) or the one it was holding when the increment
// began (applying); own LSN is the copy's own applied LSN when it was
// complete, so that a copy written to since is not taken for a base.
const (
	backupFileName = "BACKUP"
	backupFileSize = filehdr.Size + 1 + 16 + 8 + 8 + 4

	backupComplete byte = 1
	backupApplying byte = 2
)

// backupState is the content of a BACKUP file.
type backupState struct {
	state     byte
	source    filehdr.DBID
	sourceLSN uint64
	ownLSN    base.LSN
}

func (s backupState) encode(id filehdr.DBID) []byte {
	b := make([]byte, filehdr.Size, backupFileSize)
	filehdr.Header{Kind: filehdr.KindBackup, Version: filehdr.Version, DBID: id}.Encode(b)
	b = append(b, s.state)
	b = append(b, s.source[:]...)
	b = binary.LittleEndian.AppendUint64(b, s.sourceLSN)
	b = binary.LittleEndian.AppendUint64(b, uint64(s.ownLSN))
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

// readBackupState reads dir's BACKUP file; ok is false if there is none.
func readBackupState(fsys vfs.FS, dir string) (s backupState, id filehdr.DBID, ok bool, err error) {
	path := fsys.PathJoin(dir, backupFileName)
	b, err := readFile(fsys, path, backupFileSize)
	if oserror.IsNotExist(err) {
		return s, id, false, nil
	}
	if err != nil {
		return s, id, false, fmt.Errorf("heapkv: read %s: %w", path, err)
	}
	bad := func(what string) error { return fmt.Errorf("%w: %s: %s", ErrCorrupt, path, what) }
	if len(b) != backupFileSize {
		return s, id, false, bad(fmt.Sprintf("%d bytes, want %d", len(b), backupFileSize))
	}
	h, err := filehdr.Check(b, filehdr.KindBackup, filehdr.DBID{})
	if err != nil {
		return s, id, false, fmt.Errorf("%w: %s: %w", ErrCorrupt, path, err)
	}
	n := backupFileSize - 4
	if binary.LittleEndian.Uint32(b[n:]) != crc32.Checksum(b[:n], castagnoli) {
		return s, id, false, bad("checksum mismatch")
	}
	p := b[filehdr.Size:]
	s.state = p[0]
	copy(s.source[:], p[1:17])
	s.sourceLSN = binary.LittleEndian.Uint64(p[17:])
	s.ownLSN = base.LSN(binary.LittleEndian.Uint64(p[25:]))
	if s.state != backupComplete && s.state != backupApplying {
		return s, id, false, bad(fmt.Sprintf("state %d", s.state))
	}
	return s, h.DBID, true, nil
}

// refuseUnfinishedIncrement fails Open of a copy whose increment was
// interrupted, unless the caller is the incremental Backup itself.
func refuseUnfinishedIncrement(fsys vfs.FS, dir string, o *Options) error {
	s, _, ok, err := readBackupState(fsys, dir)
	if err != nil || !ok || s.state != backupApplying || o.applyingIncrement {
		return err
	}
	return fmt.Errorf("%w: %s: an incremental backup into it was interrupted; run it again to finish it",
		ErrIncompleteBackup, dir)
}

// errNotABase describes why dir cannot take an increment.
func errNotABase(dir, why string) error {
	return fmt.Errorf("%w: %s is not a base for an incremental backup of this database: %s", ErrInvalidOptions, dir, why)
}
