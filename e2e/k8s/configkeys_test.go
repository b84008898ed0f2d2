package k8s

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/zeromicro/go-queue/kq"
	"github.com/zeromicro/go-zero/core/service"
	"github.com/zeromicro/go-zero/rest"
)

// modulePrefix is this repository's module path prefix: packages under it are read from source, so a
// service's internal config types are seen as they are in this tree.
const modulePrefix = "github.com/epro-intake/"

// frameworkTypes are the external types the services' config structs embed or hold, read by reflection.
// A config struct that uses another external type fails the key check, naming it, until it is added here.
var frameworkTypes = map[string]reflect.Type{
	"github.com/zeromicro/go-zero/rest.RestConf":            reflect.TypeFor[rest.RestConf](),
	"github.com/zeromicro/go-zero/core/service.ServiceConf": reflect.TypeFor[service.ServiceConf](),
	"github.com/zeromicro/go-queue/kq.KqConf":               reflect.TypeFor[kq.KqConf](),
	"time.Duration": reflect.TypeFor[time.Duration](),
}

// configType is a struct type a config key can descend into: one declared in this repository's source, or
// a framework type. A zero configType is a leaf (a scalar, a list, a map).
type configType struct {
	src *srcStruct
	ref reflect.Type
	// tag is the json tag of the field that led here, when it is declared in this repository's source.
	tag string
}

type srcStruct struct {
	st      *ast.StructType
	pkg     *srcPackage
	imports map[string]string // the declaring file's imports: name -> path
}

// srcPackage holds the struct types a package declares; its other types are leaves.
type srcPackage struct {
	types map[string]*srcStruct
}

// configKeys resolves config keys against the services' config structs as go-zero maps them: a key names
// a field by its json tag's name or, without one, by the field's name; embedded structs' fields are the
// outer struct's.
type configKeys struct {
	t        *testing.T
	packages map[string]*srcPackage // by import path
}

func newConfigKeys(t *testing.T) *configKeys {
	return &configKeys{t: t, packages: map[string]*srcPackage{}}
}

// root is the Config struct of a service's internal/config package.
func (k *configKeys) root(service string) configType {
	p := k.pkg(modulePrefix + service + "/internal/config")
	st, ok := p.types["Config"]
	if !ok {
		k.t.Fatalf("%s/internal/config declares no struct Config", service)
	}
	return configType{src: st}
}

func (k *configKeys) pkg(importPath string) *srcPackage {
	if p, ok := k.packages[importPath]; ok {
		return p
	}
	dir := filepath.Join(repoRoot, strings.TrimPrefix(importPath, modulePrefix))
	entries, err := os.ReadDir(dir)
	if err != nil {
		k.t.Fatalf("read %s: %v", importPath, err)
	}
	var files []*ast.File
	for _, e := range entries {
		if e.IsDir() || !strings.HasSuffix(e.Name(), ".go") || strings.HasSuffix(e.Name(), "_test.go") {
			continue
		}
		f, err := parser.ParseFile(token.NewFileSet(), filepath.Join(dir, e.Name()), nil, 0)
		if err != nil {
			k.t.Fatalf("parse %s: %v", importPath, err)
		}
		files = append(files, f)
	}
	p := &srcPackage{types: map[string]*srcStruct{}}
	for _, f := range files {
		imports := map[string]string{}
		for _, im := range f.Imports {
			path, _ := strconv.Unquote(im.Path.Value)
			name := path[strings.LastIndex(path, "/")+1:]
			if im.Name != nil {
				name = im.Name.Name
			}
			imports[name] = path
		}
		for _, decl := range f.Decls {
			gd, ok := decl.(*ast.GenDecl)
			if !ok || gd.Tok != token.TYPE {
				continue
			}
			for _, spec := range gd.Specs {
				ts := spec.(*ast.TypeSpec)
				if st, ok := ts.Type.(*ast.StructType); ok {
					p.types[ts.Name.Name] = &srcStruct{st: st, pkg: p, imports: imports}
				}
			}
		}
	}
	k.packages[importPath] = p
	return p
}

// field returns the type of the field key names in c; ok is false when c has no such field.
func (k *configKeys) field(c configType, key string) (configType, bool) {
	if c.ref != nil {
		return reflectField(c.ref, key)
	}
	if c.src == nil {
		return configType{}, false
	}
	for _, f := range c.src.st.Fields.List {
		typ := k.typeOf(c.src, f.Type)
		if len(f.Names) == 0 {
			if sub, ok := k.field(typ, key); ok {
				return sub, true
			}
			continue
		}
		for _, n := range f.Names {
			if n.IsExported() && keyName(n.Name, f.Tag) == key {
				typ.tag = jsonTag(f.Tag)
				return typ, true
			}
		}
	}
	return configType{}, false
}

func (k *configKeys) typeOf(s *srcStruct, e ast.Expr) configType {
	switch e := e.(type) {
	case *ast.StarExpr:
		return k.typeOf(s, e.X)
	case *ast.Ident:
		if st, ok := s.pkg.types[e.Name]; ok {
			return configType{src: st}
		}
		return configType{} // a builtin or a named non-struct type
	case *ast.SelectorExpr:
		x, _ := e.X.(*ast.Ident)
		if x == nil {
			break
		}
		path := s.imports[x.Name]
		if strings.HasPrefix(path, modulePrefix) {
			p := k.pkg(path)
			if st, ok := p.types[e.Sel.Name]; ok {
				return configType{src: st}
			}
			return configType{}
		}
		if rt, ok := frameworkTypes[path+"."+e.Sel.Name]; ok {
			return configType{ref: rt}
		}
		k.t.Errorf("config field of type %s.%s: add it to frameworkTypes", path, e.Sel.Name)
	}
	return configType{} // lists and maps are leaves
}

// jsonTag is a field's json tag, "" without one.
func jsonTag(tag *ast.BasicLit) string {
	if tag == nil {
		return ""
	}
	s, err := strconv.Unquote(tag.Value)
	if err != nil {
		return ""
	}
	return reflect.StructTag(s).Get("json")
}

// defaultOf returns the default= option of the json tag of the field the dotted key names in the service's
// Config, as go-zero fills it in when the file leaves the key out; ok is false without one.
func (k *configKeys) defaultOf(service, key string) (string, bool) {
	c := k.root(service)
	for _, part := range strings.Split(key, ".") {
		next, ok := k.field(c, part)
		if !ok {
			return "", false
		}
		c = next
	}
	for _, opt := range strings.Split(c.tag, ",") {
		if v, ok := strings.CutPrefix(opt, "default="); ok {
			return v, true
		}
	}
	return "", false
}

func keyName(field string, tag *ast.BasicLit) string {
	if tag == nil {
		return field
	}
	s, err := strconv.Unquote(tag.Value)
	if err != nil {
		return field
	}
	name, _, _ := strings.Cut(reflect.StructTag(s).Get("json"), ",")
	if name == "" || name == "-" {
		return field
	}
	return name
}

func reflectField(t reflect.Type, key string) (configType, bool) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct {
		return configType{}, false
	}
	for i := range t.NumField() {
		f := t.Field(i)
		if f.Anonymous {
			if sub, ok := reflectField(f.Type, key); ok {
				return sub, true
			}
			continue
		}
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "" {
			name = f.Name
		}
		if name == key {
			ft := f.Type
			for ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				return configType{ref: ft}, true
			}
			return configType{}, true
		}
	}
	return configType{}, false
}

// has reports whether the dotted key names a field of root.
func (k *configKeys) has(root configType, key string) bool {
	c := root
	for _, part := range strings.Split(key, ".") {
		next, ok := k.field(c, part)
		if !ok {
			return false
		}
		c = next
	}
	return true
}

// checkTree fails for every key of a loaded config file that is not a field of the service's Config: go-zero
// ignores such a key, so a misspelt one would silently leave its default in force.
func (k *configKeys) checkTree(service string, tree map[string]any) {
	root := k.root(service)
	var walk func(prefix string, node map[string]any)
	walk = func(prefix string, node map[string]any) {
		for key, v := range node {
			full := prefix + key
			if !k.has(root, full) {
				k.t.Errorf("%s's config file sets %s, which is not a field of %s's Config", service, full, service)
				continue
			}
			if sub, ok := v.(map[string]any); ok {
				walk(full+".", sub)
			}
		}
	}
	walk("", tree)
}

// mustHave fails unless key names a field of the service's Config.
func (k *configKeys) mustHave(service, key string) {
	if !k.has(k.root(service), key) {
		k.t.Errorf("%s's Config has no field for key %s", service, key)
	}
}
