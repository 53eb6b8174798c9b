package wal

import "github.com/heapkv/heapkv/internal/vfsutil"

// SyncAll fsyncs every segment file in opts.Dir and the directory itself.
// Recovery calls it before replaying: records that reached the file system
// but were never synced before a process crash must be durable before
// anything derived from them is, or a later machine crash could lose records
// that the index already reflects. Options.BeforeSync runs first, as before
// any fsync that makes records durable. A missing directory is an empty log.
func SyncAll(opts Options) error {
	o, err := opts.withDefaults()
	if err != nil {
		return err
	}
	segs, err := listSegments(o)
	if err != nil {
		return err
	}
	if len(segs) > 0 {
		if err := o.beforeSync(); err != nil {
			return err
		}
	}
	for _, s := range segs {
		if err := syncFile(o.FS, s.path); err != nil {
			return err
		}
	}
	if len(segs) == 0 {
		return nil
	}
	return vfsutil.SyncDir(o.FS, o.Dir)
}
