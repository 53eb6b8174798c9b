package mirror

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/heapkv/heapkv/internal/filehdr"
)

// Replica header, at offset 0 of every replica file (wire format: never
// change; bump filehdr.Version instead):
//
//	+-------------------+------------+------------+--------+
//	| filehdr.Header    | block size | replica id | CRC-32C|
//	| 32 B (kind "HP")  | u32 LE     | u32 LE     | u32 LE |
//	+-------------------+------------+------------+--------+
//	0                   32           36           40       44
//
// The CRC covers bytes 32..40. The rest of the header block is zero.
const (
	offBlockSize = filehdr.Size
	offReplicaID = offBlockSize + 4
	offHdrCRC    = offReplicaID + 4
	headerSize   = offHdrCRC + 4
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// HeaderArea returns the bytes before block 0 in a replica file of the given
// block size: one block, or 4 KiB for blocks under 512 bytes. Block sizes
// under 512 bytes came later than the format (so no existing file has one);
// with them, a one-block header would put every block off the page grid.
func HeaderArea(blockSize int) int64 {
	if blockSize < 512 {
		return 4096
	}
	return int64(blockSize)
}

func encodeHeader(cfg Config, id int) []byte {
	b := make([]byte, HeaderArea(cfg.BlockSize))
	filehdr.Header{Kind: filehdr.KindHeap, Version: filehdr.Version, DBID: cfg.DBID}.Encode(b)
	binary.LittleEndian.PutUint32(b[offBlockSize:], uint32(cfg.BlockSize))
	binary.LittleEndian.PutUint32(b[offReplicaID:], uint32(id))
	binary.LittleEndian.PutUint32(b[offHdrCRC:], crc32.Checksum(b[offBlockSize:offHdrCRC], castagnoli))
	return b
}

// decodeHeader parses a replica header, returning its block size and replica id.
func decodeHeader(b []byte, id filehdr.DBID) (blockSize, replicaID int, err error) {
	if _, err := filehdr.Check(b, filehdr.KindHeap, id); err != nil {
		return 0, 0, err
	}
	if len(b) < headerSize {
		return 0, 0, fmt.Errorf("replica header is %d bytes, want %d", len(b), headerSize)
	}
	if got, want := binary.LittleEndian.Uint32(b[offHdrCRC:]), crc32.Checksum(b[offBlockSize:offHdrCRC], castagnoli); got != want {
		return 0, 0, fmt.Errorf("replica header checksum %08x, want %08x", got, want)
	}
	return int(binary.LittleEndian.Uint32(b[offBlockSize:])), int(binary.LittleEndian.Uint32(b[offReplicaID:])), nil
}

func checkHeader(cfg Config, f vfs.File, id int) error {
	b := make([]byte, headerSize)
	if n, err := f.ReadAt(b, 0); n < headerSize {
		return fmt.Errorf("replica header: read %d of %d bytes: %w", n, headerSize, err)
	}
	bs, rid, err := decodeHeader(b, cfg.DBID)
	if err != nil {
		return err
	}
	if bs != cfg.BlockSize {
		return fmt.Errorf("replica has block size %d, database has %d", bs, cfg.BlockSize)
	}
	if rid != id {
		return fmt.Errorf("replica file is replica %d, expected %d", rid, id)
	}
	return nil
}
