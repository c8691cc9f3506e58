package web

import (
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"io/fs"
	"mime"
	"path"
	"strings"
)

//go:embed static
var staticFS embed.FS

// assets are the static files, each served under a name that carries a hash of its content
// (app.3f2a9c1b.css), so that browsers may cache them for good and a new release is never
// mixed with an old stylesheet.
type assets struct {
	byURL  map[string]asset  // "app.3f2a9c1b.css" -> file
	byName map[string]string // "app.css" -> "/static/app.3f2a9c1b.css"
}

type asset struct {
	body        []byte
	contentType string
}

func loadAssets() (*assets, error) {
	a := &assets{byURL: map[string]asset{}, byName: map[string]string{}}
	err := fs.WalkDir(staticFS, "static", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		body, err := staticFS.ReadFile(p)
		if err != nil {
			return err
		}
		name := path.Base(p)
		ext := path.Ext(name)
		ct := mime.TypeByExtension(ext)
		if ct == "" {
			return fmt.Errorf("static file %s: unknown type", name)
		}
		sum := sha256.Sum256(body)
		hashed := strings.TrimSuffix(name, ext) + "." + hex.EncodeToString(sum[:4]) + ext
		a.byURL[hashed] = asset{body: body, contentType: ct}
		a.byName[name] = "/static/" + hashed
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("portal static files: %w", err)
	}
	for _, want := range []string{"app.css", "copy.js", "favicon.svg"} {
		if a.byName[want] == "" {
			return nil, fmt.Errorf("portal static files: %s missing", want)
		}
	}
	return a, nil
}

// url returns the hashed URL of a static file. Templates call it; an unknown name fails the
// template, which parseViews and the tests catch.
func (a *assets) url(name string) (string, error) {
	u, ok := a.byName[name]
	if !ok {
		return "", fmt.Errorf("no static file %s", name)
	}
	return u, nil
}
