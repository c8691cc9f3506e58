package keyward_test

import (
	"fmt"
	"go/ast"
	"go/build/constraint"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// The architecture (docs/ARCHITECTURE.md, STYLE.md): the domain imports only the standard
// library; adapters import the domain and never each other; the agent shares no server code.
// This test keeps the shape from drifting. It reads the source itself rather than asking the
// go command, so that files for every platform count: the agent's files are Windows-only and
// a Linux build would not see their imports.

const module = "github.com/keyward/keyward"

// goPackage is what the layout rules need to know about one package.
type goPackage struct {
	Path    string   // import path
	Name    string   // package name
	Doc     string   // the first package doc comment found on a non-test file, "" if none
	Imports []string // imports of the non-test files, sorted, without duplicates
}

func TestLayout(t *testing.T) {
	pkgs, err := loadPackages(".")
	if err != nil {
		t.Fatal(err)
	}
	// Guard against a loader that finds nothing and so checks nothing.
	for _, want := range []string{"/internal/escrow", "/internal/store", "/internal/api", "/cmd/keyward"} {
		if !slices.ContainsFunc(pkgs, func(p goPackage) bool { return p.Path == module+want }) {
			t.Fatalf("package %s not found under the module root", module+want)
		}
	}
	t.Logf("checked %d packages", len(pkgs))
	for _, v := range layoutViolations(pkgs) {
		t.Error(v)
	}
}

// TestLayoutRules shows that each rule fails on the thing it forbids, and names the package
// and the import.
func TestLayoutRules(t *testing.T) {
	const m = module + "/"
	doc := func(name string) string { return "Package " + name + " does things." }
	pkg := func(path, name string, imports ...string) goPackage {
		return goPackage{Path: m + path, Name: name, Doc: doc(name), Imports: imports}
	}
	tests := []struct {
		name string
		pkgs []goPackage
		want []string // substrings of the one violation expected per entry; none for a clean tree
	}{
		{name: "clean tree", pkgs: []goPackage{
			pkg("internal/escrow", "escrow", "strings", "time"),
			pkg("internal/recovery", "recovery", "encoding/binary"),
			pkg("internal/seal", "seal", m+"internal/escrow", "github.com/tink-crypto/tink-go/v2/aead"),
			pkg("internal/store", "store", m+"internal/escrow", m+"internal/seal", m+"internal/audit"),
			pkg("internal/api", "api", m+"internal/escrow", m+"internal/recovery"),
			pkg("internal/metrics", "metrics", m+"internal/escrow", "github.com/prometheus/client_golang/prometheus"),
			pkg("internal/delivery", "delivery", m+"internal/escrow", m+"internal/audit", "crypto/tls"),
			pkg("internal/agent", "agent", m+"internal/agent/wire", "net/http"),
			pkg("internal/agent/wire", "wire", "encoding/json"),
			{Path: m + "cmd/keyward-agent", Name: "main", Doc: "Command keyward-agent escrows keys.", Imports: []string{m + "internal/agent"}},
			{Path: m + "cmd/keyward", Name: "main", Doc: "Command keyward serves.", Imports: []string{m + "internal/api", m + "internal/store"}},
		}},
		{name: "package without doc comment",
			pkgs: []goPackage{{Path: m + "internal/foo", Name: "foo"}},
			want: []string{m + "internal/foo: no package doc comment"}},
		{name: "doc comment naming another package",
			pkgs: []goPackage{{Path: m + "internal/foo", Name: "foo", Doc: "Package bar does things."}},
			want: []string{m + "internal/foo: no package doc comment"}},
		{name: "command doc naming another command",
			pkgs: []goPackage{{Path: m + "cmd/keyward", Name: "main", Doc: "Command other serves."}},
			want: []string{m + "cmd/keyward: no package doc comment"}},
		{name: "domain imports a third-party module",
			pkgs: []goPackage{pkg("internal/escrow", "escrow", "time", "github.com/google/uuid")},
			want: []string{m + "internal/escrow imports github.com/google/uuid"}},
		{name: "domain imports an adapter",
			pkgs: []goPackage{pkg("internal/escrow", "escrow", m+"internal/store")},
			want: []string{m + "internal/escrow imports " + m + "internal/store"}},
		{name: "domain subpackage imports a third-party module",
			pkgs: []goPackage{pkg("internal/escrow/rules", "rules", "golang.org/x/text/cases")},
			want: []string{m + "internal/escrow/rules imports golang.org/x/text/cases"}},
		{name: "core packages import store, api or cmd", pkgs: []goPackage{
			pkg("internal/recovery", "recovery", m+"internal/store"),
			pkg("internal/seal", "seal", m+"internal/api"),
			pkg("internal/audit", "audit", m+"cmd/keyward"),
			pkg("internal/password", "password", m+"internal/store/sqlite"),
		}, want: []string{
			m + "internal/recovery imports " + m + "internal/store",
			m + "internal/seal imports " + m + "internal/api",
			m + "internal/audit imports " + m + "cmd/keyward",
			m + "internal/password imports " + m + "internal/store/sqlite",
		}},
		{name: "adapters import each other", pkgs: []goPackage{
			pkg("internal/api", "api", m+"internal/store"),
			pkg("internal/store", "store", m+"internal/api"),
		}, want: []string{
			m + "internal/api imports " + m + "internal/store",
			m + "internal/store imports " + m + "internal/api",
		}},
		{name: "metrics and the other adapters import each other", pkgs: []goPackage{
			pkg("internal/metrics", "metrics", m+"internal/store"),
			pkg("internal/api", "api", m+"internal/metrics"),
			pkg("internal/web", "web", m+"internal/metrics"),
		}, want: []string{
			m + "internal/metrics imports " + m + "internal/store",
			m + "internal/api imports " + m + "internal/metrics",
			m + "internal/web imports " + m + "internal/metrics",
		}},
		{name: "agent imports server packages", pkgs: []goPackage{
			pkg("internal/agent", "agent", m+"internal/escrow"),
			{Path: m + "cmd/keyward-agent", Name: "main", Doc: "Command keyward-agent escrows keys.", Imports: []string{m + "internal/recovery"}},
			pkg("internal/agent/bitlocker", "bitlocker", m+"internal/agentutil"),
		}, want: []string{
			m + "internal/agent imports " + m + "internal/escrow",
			m + "cmd/keyward-agent imports " + m + "internal/recovery",
			m + "internal/agent/bitlocker imports " + m + "internal/agentutil",
		}},
		{name: "delivery and the other adapters import each other", pkgs: []goPackage{
			pkg("internal/delivery", "delivery", m+"internal/escrow", m+"internal/audit", m+"internal/store"),
			pkg("internal/store", "store", m+"internal/delivery"),
			pkg("internal/metrics", "metrics", m+"internal/delivery"),
		}, want: []string{
			m + "internal/delivery imports " + m + "internal/store",
			m + "internal/store imports " + m + "internal/delivery",
			m + "internal/metrics imports " + m + "internal/delivery",
		}},
		{name: "import sources import the store", pkgs: []goPackage{
			pkg("internal/importer", "importer", m+"internal/escrow", m+"internal/store", "github.com/go-ldap/ldap/v3"),
		}, want: []string{
			m + "internal/importer imports " + m + "internal/store",
		}},
		{name: "notifier imports the store or the delivery", pkgs: []goPackage{
			pkg("internal/notify", "notify", m+"internal/escrow", m+"internal/store", m+"internal/delivery", "github.com/emersion/go-smtp"),
		}, want: []string{
			m + "internal/notify imports " + m + "internal/store",
			m + "internal/notify imports " + m + "internal/delivery",
		}},
		{name: "agent test helper imports server packages", pkgs: []goPackage{
			pkg("internal/agent/agenttest", "agenttest", m+"internal/bitlockertest", m+"internal/store"),
		}, want: []string{
			m + "internal/agent/agenttest imports " + m + "internal/store",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := layoutViolations(tt.pkgs)
			if len(got) != len(tt.want) {
				t.Fatalf("violations:\n%s\nwant %d", strings.Join(got, "\n"), len(tt.want))
			}
			for i, want := range tt.want {
				if !strings.Contains(got[i], want) {
					t.Errorf("violation %q, want it to contain %q", got[i], want)
				}
			}
		})
	}
}

// layoutViolations applies the rules to the packages and describes each breach, in the order
// of the packages and their imports.
func layoutViolations(pkgs []goPackage) []string {
	var out []string
	for _, p := range pkgs {
		if !docOK(p) {
			want := "// Package " + p.Name + " ..."
			if p.Name == "main" {
				want = "// Command " + lastElem(p.Path) + " ..."
			}
			out = append(out, fmt.Sprintf("%s: no package doc comment (want %q on the package clause of a non-test file)", p.Path, want))
		}
		for _, imp := range p.Imports {
			if why := forbidden(p.Path, imp); why != "" {
				out = append(out, fmt.Sprintf("%s imports %s: %s", p.Path, imp, why))
			}
		}
	}
	return out
}

// forbidden says why the package at path may not import imp, or "" if it may.
func forbidden(path, imp string) string {
	in := func(p, dir string) bool { return within(p, module+"/"+dir) }
	switch {
	case in(path, "internal/escrow"):
		if !isStd(imp) {
			return "the domain imports only the standard library"
		}
	case in(path, "internal/recovery"), in(path, "internal/seal"), in(path, "internal/audit"), in(path, "internal/password"):
		if in(imp, "internal/store") || in(imp, "internal/api") || in(imp, "cmd") {
			return "core packages never import an adapter or a command"
		}
	case in(path, "internal/api"):
		if in(imp, "internal/store") || in(imp, "internal/web") || in(imp, "internal/metrics") || in(imp, "internal/delivery") {
			return "adapters never import each other: the API talks to storage through its own interfaces"
		}
	case in(path, "internal/web"):
		if in(imp, "internal/store") || in(imp, "internal/api") || in(imp, "internal/metrics") || in(imp, "internal/delivery") {
			return "adapters never import each other: the portal talks to storage through its own interface"
		}
	case in(path, "internal/store"):
		if in(imp, "internal/api") || in(imp, "internal/web") || in(imp, "internal/metrics") || in(imp, "internal/delivery") {
			return "adapters never import each other"
		}
	case in(path, "internal/metrics"):
		if in(imp, "internal/store") || in(imp, "internal/api") || in(imp, "internal/web") || in(imp, "internal/delivery") || in(imp, "cmd") {
			return "adapters never import each other: the metrics count the fleet through their own interface"
		}
	case in(path, "internal/delivery"):
		if in(imp, "internal/store") || in(imp, "internal/api") || in(imp, "internal/web") || in(imp, "internal/metrics") || in(imp, "cmd") {
			return "adapters never import each other: delivery reads the trail through its own interface, and the command wires it to the store"
		}
	case in(path, "internal/importer"):
		if in(imp, "internal/store") || in(imp, "internal/api") || in(imp, "internal/web") || in(imp, "internal/metrics") || in(imp, "cmd") {
			return "the import sources only read and parse: the command hands their records to the store"
		}
	case in(path, "internal/notify"):
		if in(imp, "internal/store") || in(imp, "internal/api") || in(imp, "internal/web") || in(imp, "internal/metrics") ||
			in(imp, "internal/delivery") || in(imp, "cmd") {
			return "adapters never import each other: the notifier reads through its own interface and is a delivery sink by its methods alone"
		}
	case in(path, "internal/agent/agenttest"):
		// The agent's test helper shares the other test helpers, never server code.
		if in(imp, "internal") && !in(imp, "internal/agent") && !in(imp, "internal/bitlockertest") && !in(imp, "internal/testkit") {
			return "the agent's tests share only the test helpers with the server's"
		}
	case in(path, "cmd/keyward-agent"), in(path, "internal/agent"):
		if in(imp, "internal") && !in(imp, "internal/agent") {
			return "the agent shares no server code: it talks to the server only through the wire types and HTTP"
		}
	}
	return ""
}

// docOK reports whether the package doc comment is "Package <name> ..." or, for a command,
// "Command <directory name> ...".
func docOK(p goPackage) bool {
	f := strings.Fields(p.Doc)
	if len(f) < 2 {
		return false
	}
	if p.Name == "main" {
		return f[0] == "Command" && f[1] == lastElem(p.Path)
	}
	return f[0] == "Package" && f[1] == p.Name
}

func within(path, dir string) bool { return path == dir || strings.HasPrefix(path, dir+"/") }

func lastElem(path string) string { return path[strings.LastIndexByte(path, '/')+1:] }

// isStd reports whether the import path is in the standard library: as for the go command,
// its first element has no dot.
func isStd(path string) bool {
	first, _, _ := strings.Cut(path, "/")
	return !strings.Contains(first, ".")
}

// loadPackages reads every package of the module under root: the package clause, its doc
// comment and the imports of each non-test file that some platform or build tag would compile.
func loadPackages(root string) ([]goPackage, error) {
	byDir := map[string]*goPackage{}
	var dirs []string
	fset := token.NewFileSet()
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		if d.IsDir() {
			if path != root && (strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_") || name == "testdata" || name == "vendor") {
				return filepath.SkipDir
			}
			if path != root {
				if _, err := os.Stat(filepath.Join(path, "go.mod")); err == nil {
					return filepath.SkipDir // another module
				}
			}
			return nil
		}
		if !strings.HasSuffix(name, ".go") || strings.HasSuffix(name, "_test.go") || strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.ImportsOnly|parser.ParseComments)
		if err != nil {
			return err
		}
		ok, err := buildable(f)
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		if !ok {
			return nil
		}
		dir := filepath.Dir(path)
		p := byDir[dir]
		if p == nil {
			rel, err := filepath.Rel(root, dir)
			if err != nil {
				return err
			}
			ip := module
			if rel != "." {
				ip += "/" + filepath.ToSlash(rel)
			}
			p = &goPackage{Path: ip, Name: f.Name.Name}
			byDir[dir] = p
			dirs = append(dirs, dir)
		}
		if f.Name.Name != p.Name {
			return fmt.Errorf("%s: package %s, but other files in %s are package %s", path, f.Name.Name, dir, p.Name)
		}
		if p.Doc == "" && f.Doc != nil {
			p.Doc = f.Doc.Text()
		}
		for _, spec := range f.Imports {
			imp, err := strconv.Unquote(spec.Path.Value)
			if err != nil {
				return fmt.Errorf("%s: %w", path, err)
			}
			if !slices.Contains(p.Imports, imp) {
				p.Imports = append(p.Imports, imp)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	slices.Sort(dirs)
	pkgs := make([]goPackage, 0, len(dirs))
	for _, dir := range dirs {
		p := byDir[dir]
		slices.Sort(p.Imports)
		pkgs = append(pkgs, *p)
	}
	return pkgs, nil
}

// buildable reports whether some combination of platform and build tags compiles the file:
// its //go:build line, if any, is satisfiable with the tag "ignore" unset.
func buildable(f *ast.File) (bool, error) {
	for _, g := range f.Comments {
		if g.Pos() >= f.Package {
			break
		}
		for _, c := range g.List {
			if !constraint.IsGoBuild(c.Text) {
				continue
			}
			expr, err := constraint.Parse(c.Text)
			if err != nil {
				return false, err
			}
			return satisfiable(expr), nil
		}
	}
	return true, nil
}

func satisfiable(expr constraint.Expr) bool {
	var tags []string
	var collect func(constraint.Expr)
	collect = func(x constraint.Expr) {
		switch x := x.(type) {
		case *constraint.TagExpr:
			if x.Tag != "ignore" && !slices.Contains(tags, x.Tag) {
				tags = append(tags, x.Tag)
			}
		case *constraint.NotExpr:
			collect(x.X)
		case *constraint.AndExpr:
			collect(x.X)
			collect(x.Y)
		case *constraint.OrExpr:
			collect(x.X)
			collect(x.Y)
		}
	}
	collect(expr)
	if len(tags) > 16 {
		return true // too many to try; count the file rather than miss its imports
	}
	for set := 0; set < 1<<len(tags); set++ {
		if expr.Eval(func(tag string) bool {
			i := slices.Index(tags, tag)
			return i >= 0 && set&(1<<i) != 0
		}) {
			return true
		}
	}
	return false
}

func TestBuildable(t *testing.T) {
	tests := []struct {
		name string
		src  string
		want bool
	}{
		{"no constraint", "package p\n", true},
		{"ignore", "//go:build ignore\n\npackage p\n", false},
		{"windows only", "//go:build windows\n\npackage p\n", true},
		{"not windows", "//go:build !windows\n\npackage p\n", true},
		{"windows and amd64 or arm64", "//go:build windows && (amd64 || arm64)\n\npackage p\n", true},
		{"contradiction", "//go:build windows && !windows\n\npackage p\n", false},
		{"ignore or a tag", "//go:build ignore || postgres\n\npackage p\n", true},
		{"ignore and a tag", "//go:build ignore && postgres\n\npackage p\n", false},
		{"constraint after the package clause does not count", "package p\n\n//go:build ignore\n", true},
		{"doc comment then constraint", "// Copyright.\n\n//go:build ignore\n\n// Package p.\npackage p\n", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := parser.ParseFile(token.NewFileSet(), "p.go", tt.src, parser.ImportsOnly|parser.ParseComments)
			if err != nil {
				t.Fatal(err)
			}
			got, err := buildable(f)
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("buildable = %v, want %v", got, tt.want)
			}
		})
	}
}
