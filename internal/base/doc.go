// Package base holds the few definitions that every layer of heapkv shares:
// the log sequence number (LSN) and the corruption marker.
//
// It imports only the standard library, so that alloc, wal, mirror and the
// other internal packages can use it without importing each other.
//
// # Corruption
//
// Damage found on disk is reported by each package with its own error text
// (a bad checksum in the log, an allocation snapshot that does not decode, a
// replica header of another database), but every such error carries one
// marker, ErrCorrupt, so a caller at any layer asks a single question:
//
//	if errors.Is(err, base.ErrCorrupt) { ... } // or base.IsCorrupt(err)
//
// A package marks its own sentinel once, keeping its name and message:
//
//	var ErrCorrupt = base.MarkCorrupt(errors.New("wal: corrupt log"))
//
// and every error that wraps that sentinel with %w then satisfies both
// errors.Is(err, wal.ErrCorrupt) and errors.Is(err, base.ErrCorrupt). An
// error made without a package sentinel is marked directly with MarkCorrupt
// or built with CorruptErrorf. The marker is modelled on Pebble's
// base.MarkCorruptionError but uses only the standard errors package: the
// marked error's text is unchanged, and errors.Is and errors.As see both the
// marker and everything the original error wraps.
package base
