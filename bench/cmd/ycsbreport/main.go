// Command ycsbreport turns the JSON Lines written by `ycsb -json` into
// markdown tables (medians over runs, run counts) and PNG charts.
//
//	go run ./cmd/ycsbreport -png charts/ ycsb-1k.jsonl ycsb-4k.jsonl > tables.md
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/heapkv/heapkv/bench/report"
	"github.com/heapkv/heapkv/bench/runner"
)

func main() {
	png := flag.String("png", "", "directory for PNG charts (none if empty)")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: ycsbreport [-png dir] results.jsonl...")
		flag.PrintDefaults()
	}
	flag.Parse()
	if err := run(*png, flag.Args()); err != nil {
		fmt.Fprintln(os.Stderr, "ycsbreport:", err)
		os.Exit(1)
	}
}

func run(png string, files []string) error {
	if len(files) == 0 {
		return fmt.Errorf("no results files")
	}
	var all []*runner.Result
	for _, name := range files {
		f, err := os.Open(name)
		if err != nil {
			return err
		}
		res, err := runner.ReadJSONLines(f)
		f.Close()
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		all = append(all, res...)
	}
	cells := report.Aggregate(all)
	report.Markdown(os.Stdout, cells)
	if png != "" {
		if err := os.MkdirAll(png, 0o755); err != nil {
			return err
		}
		files, err := report.Charts(png, cells)
		if err != nil {
			return err
		}
		for _, f := range files {
			fmt.Fprintln(os.Stderr, "wrote", f)
		}
	}
	return nil
}
