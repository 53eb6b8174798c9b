// Package expvarstats publishes a heapkv database's statistics
// (heapkv.Stats) through the standard library's expvar, which serves every
// published variable as JSON at /debug/vars:
//
//	expvarstats.Publish("heapkv", db)
//	http.ListenAndServe("localhost:6060", nil) // GET /debug/vars
//
// The variable's value is the Stats of the moment it is read, with the
// same snake_case keys as the shell's --json output, or {"error": "..."}
// once the database is closed. It is a package of its own because
// importing expvar registers /debug/vars on http.DefaultServeMux, which a
// program that embeds heapkv should only get by asking.
package expvarstats

import (
	"expvar"

	"github.com/heapkv/heapkv"
)

// Func returns db's statistics as an expvar.Func: each read calls
// db.Stats.
func Func(db *heapkv.DB) expvar.Func {
	return func() any {
		st, err := db.Stats()
		if err != nil {
			return map[string]string{"error": err.Error()}
		}
		return st
	}
}

// Publish publishes db's statistics as the expvar variable name. Like
// expvar.Publish it panics if name is already published: call it once per
// name, at start-up.
func Publish(name string, db *heapkv.DB) { expvar.Publish(name, Func(db)) }
