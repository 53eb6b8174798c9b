package heapkv_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// The import rules of ARCHITECTURE.md "Layers", checked on what `go list`
// reports (as Go's go/build deps_test.go and Pebble's internal/lint do).
// Only the packages' own code counts, not their tests.

const modPath = "github.com/heapkv/heapkv"

// leafPkgs are the packages below the root that know nothing of each other.
var leafPkgs = []string{"alloc", "wal", "mirror"}

// leafThirdParty is every package outside the module and the standard
// library that a leaf or an internal/ package may import.
var leafThirdParty = []string{"github.com/cockroachdb/pebble/v2/vfs"}

// leafAllowance lists imports tolerated for now although the rules forbid
// them: package (relative to the module) -> imports. Empty: none.
var leafAllowance = map[string][]string{}

type listedPkg struct {
	ImportPath string
	Standard   bool
	Imports    []string
	Error      *struct{ Err string }
}

func TestImportLayers(t *testing.T) {
	goCmd, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("no go command: %v", err)
	}
	cmd := exec.Command(goCmd, "list", "-e", "-deps", "-json=ImportPath,Standard,Imports,Error", modPath+"/...")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.Bytes())
	}
	pkgs := map[string]*listedPkg{}
	var own []*listedPkg // the module's packages
	for dec := json.NewDecoder(bytes.NewReader(out)); ; {
		p := new(listedPkg)
		if err := dec.Decode(p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("go list output: %v", err)
		}
		if p.Error != nil {
			t.Fatalf("go list: %s: %s", p.ImportPath, p.Error.Err)
		}
		pkgs[p.ImportPath] = p
		if p.ImportPath == modPath || strings.HasPrefix(p.ImportPath, modPath+"/") {
			own = append(own, p)
		}
	}
	rel := func(path string) (string, bool) { // path relative to the module
		if path == modPath {
			return ".", true
		}
		return strings.CutPrefix(path, modPath+"/")
	}
	isInternal := func(r string) bool { return strings.HasPrefix(r, "internal/") }
	checked := map[string]bool{}
	for _, p := range own {
		name, _ := rel(p.ImportPath)
		switch {
		case slices.Contains(leafPkgs, name) || isInternal(name):
			checked[name] = true
			kind := "leaf package"
			if isInternal(name) {
				kind = "internal package"
			}
			for _, imp := range p.Imports {
				if r, ok := rel(imp); ok {
					if !isInternal(r) {
						t.Errorf("%s %s imports %s: alloc, wal, mirror and internal/... may import from this module only internal/... (ARCHITECTURE.md, Layers)", kind, name, imp)
					}
					continue
				}
				if dep := pkgs[imp]; dep != nil && dep.Standard {
					continue
				}
				if slices.Contains(leafThirdParty, imp) || slices.Contains(leafAllowance[name], imp) {
					continue
				}
				t.Errorf("%s %s imports %s: outside the standard library and this module, alloc, wal, mirror and internal/... may import only %s (ARCHITECTURE.md, Layers)",
					kind, name, imp, strings.Join(leafThirdParty, ", "))
			}
		case name == "cmd/heapkv":
			checked[name] = true
			for _, imp := range p.Imports {
				if r, ok := rel(imp); ok && r != "." {
					t.Errorf("cmd/heapkv imports %s: the shell uses the public API only, the root package (ARCHITECTURE.md, Layers)", imp)
				}
			}
		}
	}
	for _, name := range append(slices.Clone(leafPkgs), "cmd/heapkv", "internal/bitmap", "internal/filehdr") {
		if !checked[name] {
			t.Errorf("go list did not report %s/%s: the rules check nothing there", modPath, name)
		}
	}
}
