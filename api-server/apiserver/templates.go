package apiserver

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/viworks/backend-agent/pkg/argseal"
	"github.com/viworks/backend-agent/pkg/store"
)

// Limits of a template.
const (
	maxTemplateParams  = 64
	maxEnumValues      = 100
	maxPatternLen      = 512
	maxDescriptionLen  = 1024
	templateRefVersion = "@"
)

// Parameter types.
const (
	ParamString  = "string"
	ParamInteger = "integer"
	ParamNumber  = "number"
	ParamBoolean = "boolean"
	ParamEnum    = "enum"
)

var (
	templateNamePattern = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]{0,63}$`)
	paramNamePattern    = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,63}$`)
	// placeholder is a parameter reference inside a string value of args.
	placeholder = regexp.MustCompile(`\{\{\s*([^{}\s]*)\s*\}\}`)
)

// ParamDef is one typed parameter of a template.
type ParamDef struct {
	Type        string          `json:"type"`
	Required    bool            `json:"required,omitempty"`
	Default     json.RawMessage `json:"default,omitempty"`
	Pattern     string          `json:"pattern,omitempty"` // string: the whole value must match (Go RE2 syntax)
	Values      []string        `json:"values,omitempty"`  // enum: the allowed values
	Secret      bool            `json:"secret,omitempty"`  // redacted wherever args are shown, sealed at rest
	Description string          `json:"description,omitempty"`
}

// TemplateDefaults are a template's default targeting and options; a
// command made from it may override each.
type TemplateDefaults struct {
	AgentTargets   []string         `json:"agent_targets,omitempty"`
	Selector       *SelectorRequest `json:"selector,omitempty"`
	Mode           string           `json:"mode,omitempty"`
	Priority       string           `json:"priority,omitempty"`
	TimeoutSeconds *int             `json:"timeout_seconds,omitempty"`
	MaxRetries     *int             `json:"max_retries,omitempty"`
	TTLSeconds     *int             `json:"ttl_seconds,omitempty"`
	MaxConcurrency *int             `json:"max_concurrency,omitempty"`
	MaxErrors      *int             `json:"max_errors,omitempty"`
}

// TemplateRequest is the body of POST /api/v1/templates.
type TemplateRequest struct {
	Name        string              `json:"name"`
	Description string              `json:"description"`
	Verb        string              `json:"verb"`
	Args        json.RawMessage     `json:"args"`
	Parameters  map[string]ParamDef `json:"parameters"`
	TemplateDefaults
}

// TemplateView is the API shape of one template version.
type TemplateView struct {
	Name        string              `json:"name"`
	Version     int                 `json:"version"`
	Description string              `json:"description"`
	Verb        string              `json:"verb"`
	Args        json.RawMessage     `json:"args"`
	Parameters  map[string]ParamDef `json:"parameters"`
	Defaults    TemplateDefaults    `json:"defaults"`
	CreatedBy   string              `json:"created_by"`
	CreatedAt   time.Time           `json:"created_at"`
}

func templateView(t store.Template) TemplateView {
	v := TemplateView{Name: t.Name, Version: t.Version, Description: t.Description, Verb: t.Verb,
		Args: json.RawMessage(t.Args), CreatedBy: t.CreatedBy, CreatedAt: t.CreatedAt, Parameters: map[string]ParamDef{}}
	_ = json.Unmarshal(t.Parameters, &v.Parameters)
	_ = json.Unmarshal(t.Defaults, &v.Defaults)
	for name, p := range v.Parameters {
		if p.Secret && len(p.Default) > 0 {
			p.Default = json.RawMessage(`"REDACTED"`)
			v.Parameters[name] = p
		}
	}
	return v
}

// pointerError is the FieldError of the body member at JSON pointer ptr.
func pointerError(ptr, msg string) FieldError {
	field := strings.ReplaceAll(strings.TrimPrefix(ptr, "/"), "/", ".")
	return FieldError{Field: field, Pointer: ptr, Message: msg}
}

// commandFieldError is a FieldError of DecodeCommandRequest (a dotted name
// such as selector.site or agent_targets[2]) with its JSON pointer.
func commandFieldError(e FieldError) FieldError {
	ptr := "/" + strings.NewReplacer(".", "/", "[", "/", "]", "").Replace(e.Field)
	return pointerError(ptr, e.Message)
}

// escapePointer escapes one reference token of a JSON pointer (RFC 6901).
func escapePointer(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "~", "~0"), "/", "~1")
}

// validateTemplate checks a template request; every problem names its JSON
// pointer.
func (s *Server) validateTemplate(req TemplateRequest) []FieldError {
	var errs []FieldError
	if !templateNamePattern.MatchString(req.Name) {
		errs = append(errs, pointerError("/name", "is required: 1-64 characters of a-z, 0-9, _ . - starting with a letter or digit"))
	}
	if len(req.Description) > maxDescriptionLen {
		errs = append(errs, pointerError("/description", fmt.Sprintf("at most %d bytes", maxDescriptionLen)))
	}
	if !verbPattern.MatchString(req.Verb) {
		errs = append(errs, pointerError("/verb", "is required: 1-64 characters of a-z, 0-9, _ . - starting with a letter"))
	}
	if len(req.Parameters) > maxTemplateParams {
		errs = append(errs, pointerError("/parameters", fmt.Sprintf("at most %d parameters", maxTemplateParams)))
	}
	for _, name := range sortedKeys(req.Parameters) {
		errs = append(errs, validateParamDef("/parameters/"+escapePointer(name), name, req.Parameters[name])...)
	}
	args := req.Args
	if len(args) == 0 || string(args) == "null" {
		args = json.RawMessage(`{}`)
	}
	var obj map[string]any
	if err := decodeNumbers(args, &obj); err != nil {
		errs = append(errs, pointerError("/args", "must be a JSON object"))
	} else {
		errs = append(errs, checkPlaceholders("/args", obj, req.Parameters, false)...)
	}
	// The defaults are validated as a command's fields are.
	probe := map[string]any{"verb": "probe", "args": map[string]any{}}
	if raw, err := json.Marshal(req.TemplateDefaults); err == nil {
		_ = json.Unmarshal(raw, &probe)
	}
	if len(req.AgentTargets) == 0 && req.Selector == nil {
		probe["agent_targets"] = []string{"probe"} // targets may come with each command
	}
	body, _ := json.Marshal(probe)
	_, cerrs := DecodeCommandRequest(body, s.cfg.MaxTargets)
	for _, e := range cerrs {
		errs = append(errs, commandFieldError(e))
	}
	return errs
}

func validateParamDef(ptr, name string, p ParamDef) []FieldError {
	var errs []FieldError
	if !paramNamePattern.MatchString(name) {
		errs = append(errs, pointerError(ptr, "a parameter name is 1-64 characters of A-Z, a-z, 0-9, _ not starting with a digit"))
	}
	switch p.Type {
	case ParamString, ParamInteger, ParamNumber, ParamBoolean:
		if len(p.Values) > 0 {
			errs = append(errs, pointerError(ptr+"/values", "applies to type enum only"))
		}
	case ParamEnum:
		if len(p.Values) == 0 || len(p.Values) > maxEnumValues {
			errs = append(errs, pointerError(ptr+"/values", fmt.Sprintf("an enum needs 1-%d values", maxEnumValues)))
		}
	default:
		errs = append(errs, pointerError(ptr+"/type", "must be string, integer, number, boolean or enum"))
		return errs
	}
	if p.Pattern != "" {
		if p.Type != ParamString {
			errs = append(errs, pointerError(ptr+"/pattern", "applies to type string only"))
		} else if _, err := regexp.Compile(p.Pattern); err != nil || len(p.Pattern) > maxPatternLen {
			errs = append(errs, pointerError(ptr+"/pattern", fmt.Sprintf("must be a regular expression (RE2 syntax) of at most %d bytes", maxPatternLen)))
		}
	}
	if len(p.Description) > maxDescriptionLen {
		errs = append(errs, pointerError(ptr+"/description", fmt.Sprintf("at most %d bytes", maxDescriptionLen)))
	}
	if len(p.Default) > 0 && len(errs) == 0 {
		if _, msg := p.check(p.Default); msg != "" {
			errs = append(errs, pointerError(ptr+"/default", msg))
		}
	}
	return errs
}

// checkPlaceholders walks args: every {{name}} must name a parameter, a
// secret parameter must sit under a secret-looking key (so that it is sealed
// at rest and redacted, argseal.IsSecretKey), and a literal value under such
// a key is refused (the template would store it in the clear).
func checkPlaceholders(ptr string, v any, params map[string]ParamDef, underSecret bool) []FieldError {
	var errs []FieldError
	switch t := v.(type) {
	case map[string]any:
		for _, k := range sortedKeys(t) {
			errs = append(errs, checkPlaceholders(ptr+"/"+escapePointer(k), t[k], params, underSecret || argseal.IsSecretKey(k))...)
		}
	case []any:
		for i, item := range t {
			errs = append(errs, checkPlaceholders(ptr+"/"+strconv.Itoa(i), item, params, underSecret)...)
		}
	case string:
		refs := placeholder.FindAllStringSubmatch(t, -1)
		for _, m := range refs {
			p, ok := params[m[1]]
			switch {
			case !ok:
				errs = append(errs, pointerError(ptr, fmt.Sprintf("{{%s}} names no parameter", m[1])))
			case p.Secret && !underSecret:
				errs = append(errs, pointerError(ptr, fmt.Sprintf("secret parameter %s must be under a key naming a secret (password, token, key, secret, credential, private), so that it is sealed and redacted", m[1])))
			}
		}
		if underSecret && len(refs) == 0 && t != "" {
			errs = append(errs, pointerError(ptr, "a secret value must come from a parameter ({{name}}), not be written into the template"))
		}
	default:
		if underSecret && v != nil {
			errs = append(errs, pointerError(ptr, "a secret value must come from a parameter ({{name}}), not be written into the template"))
		}
	}
	return errs
}

// check validates one value against the parameter; it returns the value to
// render (string, json.Number or bool) or why it does not validate.
func (p ParamDef) check(raw json.RawMessage) (any, string) {
	var v any
	if err := decodeNumbers(raw, &v); err != nil {
		return nil, "is not JSON"
	}
	switch p.Type {
	case ParamString:
		s, ok := v.(string)
		if !ok {
			return nil, "must be a string"
		}
		if p.Pattern != "" {
			if re, err := regexp.Compile(`^(?:` + p.Pattern + `)$`); err != nil || !re.MatchString(s) {
				return nil, "does not match the pattern " + p.Pattern
			}
		}
		return s, ""
	case ParamInteger:
		n, ok := v.(json.Number)
		if _, err := n.Int64(); !ok || err != nil {
			return nil, "must be an integer"
		}
		return n, ""
	case ParamNumber:
		n, ok := v.(json.Number)
		f, err := n.Float64()
		if !ok || err != nil || math.IsInf(f, 0) {
			return nil, "must be a number"
		}
		return n, ""
	case ParamBoolean:
		b, ok := v.(bool)
		if !ok {
			return nil, "must be true or false"
		}
		return b, ""
	case ParamEnum:
		s, ok := v.(string)
		if !ok || !slices.Contains(p.Values, s) {
			return nil, "must be one of " + strings.Join(p.Values, ", ")
		}
		return s, ""
	}
	return nil, "has an unknown type"
}

func decodeNumbers(raw []byte, dst any) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	return dec.Decode(dst)
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// expansion is what a template and its params made of a request.
type expansion struct {
	body   []byte         // the command request, as if sent with verb and args
	ref    string         // name@version
	params map[string]any // the params given, secret ones redacted
}

// expandTemplate turns a command body naming a template into the command
// request it stands for: the template's defaults, overridden by the body's
// targeting and options, with the verb and the args rendered from the
// params. A body without "template" comes back as it is (nil expansion).
func (s *Server) expandTemplate(c *gin.Context, body []byte) (*expansion, []FieldError, error) {
	var fields map[string]json.RawMessage
	if json.Unmarshal(body, &fields) != nil {
		return nil, nil, nil // DecodeCommandRequest says what is wrong
	}
	rawRef, ok := fields["template"]
	if !ok {
		if _, ok := fields["params"]; ok {
			return nil, []FieldError{pointerError("/params", "applies with template only")}, nil
		}
		return nil, nil, nil
	}
	var ref string
	if json.Unmarshal(rawRef, &ref) != nil || ref == "" {
		return nil, []FieldError{pointerError("/template", `must be a template name, or "name@version"`)}, nil
	}
	var errs []FieldError
	for _, k := range []string{"verb", "args"} {
		if _, ok := fields[k]; ok {
			errs = append(errs, pointerError("/"+k, "a template gives the verb and args; send params instead"))
		}
	}
	name, version := ref, 0
	if n, v, ok := strings.Cut(ref, templateRefVersion); ok {
		parsed, err := strconv.Atoi(v)
		if err != nil || parsed < 1 {
			return nil, append(errs, pointerError("/template", `the version of "name@version" must be a positive integer`)), nil
		}
		name, version = n, parsed
	}
	if !templateNamePattern.MatchString(name) {
		return nil, append(errs, pointerError("/template", "no template has this name")), nil
	}
	tpl, err := s.store.GetTemplate(c.Request.Context(), name, version)
	if errors.Is(err, store.ErrNotFound) {
		return nil, append(errs, pointerError("/template", fmt.Sprintf("unknown template %q (or a retired one)", ref))), nil
	}
	if err != nil {
		return nil, nil, err
	}
	var params map[string]json.RawMessage
	if raw, ok := fields["params"]; ok && string(raw) != "null" {
		if json.Unmarshal(raw, &params) != nil {
			return nil, append(errs, pointerError("/params", "must be a JSON object")), nil
		}
	}
	view := templateView(tpl)
	defs := map[string]ParamDef{}
	_ = json.Unmarshal(tpl.Parameters, &defs)
	values, shown, perrs := bindParams(defs, params)
	errs = append(errs, perrs...)
	if len(errs) > 0 {
		return nil, errs, nil
	}
	var args any
	if err := decodeNumbers(tpl.Args, &args); err != nil {
		return nil, nil, fmt.Errorf("decoding template args: %w", err)
	}
	req := map[string]any{}
	if raw, err := json.Marshal(view.Defaults); err == nil {
		_ = json.Unmarshal(raw, &req)
	}
	for k, v := range fields {
		if k != "template" && k != "params" {
			req[k] = v
		}
	}
	req["verb"], req["args"] = tpl.Verb, render(args, values)
	out, err := json.Marshal(req)
	if err != nil {
		return nil, nil, fmt.Errorf("encoding the expanded command: %w", err)
	}
	return &expansion{body: out, ref: fmt.Sprintf("%s@%d", tpl.Name, tpl.Version), params: shown}, nil, nil
}

// bindParams validates params against defs and applies defaults; it returns
// the values to render and the params as they may be shown (secret ones
// redacted).
func bindParams(defs map[string]ParamDef, params map[string]json.RawMessage) (map[string]any, map[string]any, []FieldError) {
	var errs []FieldError
	values, shown := map[string]any{}, map[string]any{}
	for _, name := range sortedKeys(params) {
		if _, ok := defs[name]; !ok {
			errs = append(errs, pointerError("/params/"+escapePointer(name), "is not a parameter of the template"))
		}
	}
	for _, name := range sortedKeys(defs) {
		def := defs[name]
		raw, given := params[name]
		if !given || string(raw) == "null" {
			if len(def.Default) == 0 {
				if def.Required {
					errs = append(errs, pointerError("/params/"+escapePointer(name), "is required"))
				}
				continue
			}
			raw = def.Default
		}
		v, msg := def.check(raw)
		if msg != "" {
			errs = append(errs, pointerError("/params/"+escapePointer(name), msg))
			continue
		}
		values[name] = v
		if given {
			shown[name] = v
			if def.Secret {
				shown[name] = "REDACTED"
			}
		}
	}
	return values, shown, errs
}

// render replaces the placeholders in the string values of v: a string that
// is one placeholder becomes the value itself (a number stays a number), one
// with text around has the values written in; a parameter without a value
// renders as null, or as nothing inside text.
func render(v any, values map[string]any) any {
	switch t := v.(type) {
	case map[string]any:
		for k, item := range t {
			t[k] = render(item, values)
		}
	case []any:
		for i, item := range t {
			t[i] = render(item, values)
		}
	case string:
		if m := placeholder.FindStringSubmatch(t); m != nil && m[0] == t {
			return values[m[1]]
		}
		return placeholder.ReplaceAllStringFunc(t, func(ref string) string {
			switch val := values[placeholder.FindStringSubmatch(ref)[1]].(type) {
			case nil:
				return ""
			case string:
				return val
			default:
				return fmt.Sprint(val)
			}
		})
	}
	return v
}

func (s *Server) createTemplate(c *gin.Context) {
	var req TemplateRequest
	if !readStrict(c, &req) {
		return
	}
	if errs := s.validateTemplate(req); len(errs) > 0 {
		writeProblem(c, http.StatusUnprocessableEntity, "invalid template", errs)
		return
	}
	args := store.JSON(req.Args)
	if len(args) == 0 || string(args) == "null" {
		args = store.JSON("{}")
	}
	if req.Parameters == nil {
		req.Parameters = map[string]ParamDef{}
	}
	params, _ := json.Marshal(req.Parameters)
	defaults, _ := json.Marshal(req.TemplateDefaults)
	p := principal(c)
	saved, err := s.store.SaveTemplate(c.Request.Context(), store.Template{
		Name: req.Name, Verb: req.Verb, Args: args, Parameters: params, Defaults: defaults, Description: req.Description, CreatedBy: p.Subject,
	}, auditEvent(c, "template.save", map[string]any{"name": req.Name, "verb": req.Verb}))
	if s.storeFailed(c, resTemplate, "saving template", err) {
		return
	}
	c.Header("Location", "/api/v1/templates/"+saved.Name)
	c.JSON(http.StatusCreated, templateView(saved))
}

func (s *Server) listTemplates(c *gin.Context) {
	listPage(s, c, resTemplate, pageOnly, s.store.ListTemplates, templateView)
}

func (s *Server) getTemplate(c *gin.Context) {
	version := 0
	if v := c.Param("version"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			writeProblem(c, http.StatusNotFound, "no such template version", nil)
			return
		}
		version = n
	}
	t, err := s.store.GetTemplate(c.Request.Context(), c.Param("name"), version)
	if s.storeFailed(c, resTemplate, "getting template", err) {
		return
	}
	c.JSON(http.StatusOK, templateView(t))
}

func (s *Server) templateVersions(c *gin.Context) {
	rows, err := s.store.TemplateVersions(c.Request.Context(), c.Param("name"))
	if s.storeFailed(c, resTemplate, "listing template versions", err) {
		return
	}
	out := List[TemplateView]{Items: make([]TemplateView, 0, len(rows))}
	for _, t := range rows {
		out.Items = append(out.Items, templateView(t))
	}
	c.JSON(http.StatusOK, out)
}

func (s *Server) retireTemplate(c *gin.Context) {
	name := c.Param("name")
	err := s.store.RetireTemplate(c.Request.Context(), name, auditEvent(c, "template.retire", map[string]any{"name": name}))
	if s.storeFailed(c, resTemplate, "retiring template", err) {
		return
	}
	c.Status(http.StatusNoContent)
}
