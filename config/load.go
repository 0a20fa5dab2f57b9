package config

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"reflect"
	"sort"
	"strings"
	"time"

	"github.com/go-viper/mapstructure/v2"
	"github.com/knadh/koanf/maps"
	"github.com/knadh/koanf/parsers/toml/v2"
	"github.com/knadh/koanf/providers/file"
	"github.com/knadh/koanf/v2"
)

// EnvPrefix starts every environment variable Krill reads.
const EnvPrefix = "KRILL_"

// Keys returns every configuration key ("c2s.listen", ...) with its default
// value, flattened from Default. Durations are given as strings ("60s").
func Keys() map[string]any { return Flatten(Default()) }

// Flatten returns every key of c with its value, durations as strings.
func Flatten(c Config) map[string]any {
	out := make(map[string]any)
	flatten("", reflect.ValueOf(c), out)
	return out
}

func flatten(prefix string, v reflect.Value, out map[string]any) {
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		key := t.Field(i).Tag.Get("koanf")
		if prefix != "" {
			key = prefix + "." + key
		}
		f := v.Field(i)
		switch {
		case f.Kind() == reflect.Struct:
			flatten(key, f, out)
		case f.Type() == reflect.TypeFor[time.Duration]():
			out[key] = time.Duration(f.Int()).String()
		default:
			out[key] = f.Interface()
		}
	}
}

// RegisterFlags defines one flag per configuration key on fs, named after
// the key (--preauth.timeout). Only flags the user sets override the file
// and the environment.
func RegisterFlags(fs *flag.FlagSet) {
	keys := Keys()
	names := make([]string, 0, len(keys))
	for k := range keys {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		fs.String(k, fmt.Sprint(keys[k]), "configuration key "+k)
	}
}

// Load builds the configuration: defaults, then the TOML file at path (if
// path is not empty), then environment variables from environ (KRILL_*),
// then the flags set on fs (nil for none). Unknown keys are errors. The
// result is validated.
func Load(path string, environ []string, fs *flag.FlagSet) (Config, error) {
	k := koanf.New(".")
	if err := k.Load(flatMap(Keys()), nil); err != nil {
		return Config{}, fmt.Errorf("config: defaults: %w", err)
	}
	if path != "" {
		if _, err := os.Stat(path); err != nil {
			return Config{}, fmt.Errorf("config: %w", err)
		}
		if err := k.Load(file.Provider(path), toml.Parser()); err != nil {
			return Config{}, fmt.Errorf("config: %s: %w", path, err)
		}
	}
	env, err := envKeys(environ)
	if err != nil {
		return Config{}, err
	}
	if err := k.Load(flatMap(env), nil); err != nil {
		return Config{}, fmt.Errorf("config: environment: %w", err)
	}
	if fs != nil {
		set := make(map[string]any)
		fs.Visit(func(f *flag.Flag) {
			if _, ok := Keys()[f.Name]; ok {
				set[f.Name] = f.Value.String()
			}
		})
		if err := k.Load(flatMap(set), nil); err != nil {
			return Config{}, fmt.Errorf("config: flags: %w", err)
		}
	}
	// Tables keyed by domain names are read flat, their dots joined again.
	all := k.All()
	for _, t := range dottedTables {
		k.Delete(t)
	}
	var c Config
	dc := &mapstructure.DecoderConfig{
		DecodeHook: mapstructure.ComposeDecodeHookFunc(mapstructure.StringToTimeDurationHookFunc(),
			mapstructure.StringToSliceHookFunc(",")), // lists from the environment and flags: "a,b"
		WeaklyTypedInput: true,
		ErrorUnused:      true,
		TagName:          "koanf",
		Result:           &c,
	}
	if err := k.UnmarshalWithConf("", &c, koanf.UnmarshalConf{DecoderConfig: dc}); err != nil {
		where := "configuration"
		if path != "" {
			where = path
		}
		return Config{}, fmt.Errorf("config: %s: %w", where, err)
	}
	if err := setDomainTables(&c, all); err != nil {
		return Config{}, err
	}
	if err := c.Validate(); err != nil {
		return Config{}, fmt.Errorf("config: invalid:\n%w", err)
	}
	return c, nil
}

// envKeys maps KRILL_SECTION_SOME_KEY=v to "section.some_key" and
// KRILL_DATA_DIR=v to "data_dir". A KRILL_ variable that names no key is an
// error, so a typo does not silently fall back to a default.
func envKeys(environ []string) (map[string]any, error) {
	keys := Keys()
	out := make(map[string]any)
	var errs []error
	for _, kv := range environ {
		name, val, ok := strings.Cut(kv, "=")
		if !ok || !strings.HasPrefix(name, EnvPrefix) {
			continue
		}
		key := EnvKey(name)
		if _, known := keys[key]; !known {
			errs = append(errs, fmt.Errorf("config: environment variable %s names no configuration key", name))
			continue
		}
		out[key] = val
	}
	return out, errors.Join(errs...)
}

// EnvKey returns the configuration key an environment variable sets:
// KRILL_PREAUTH_MAX_PER_IP is "preauth.max_per_ip".
func EnvKey(name string) string {
	rest := strings.ToLower(strings.TrimPrefix(name, EnvPrefix))
	for _, section := range []string{"c2s", "preauth", "tls", "log", "server", "storage", "im", "register", "admin", "csi", "sm", "fast", "pep", "mam", "muc", "web", "s2s", "component", "upload", "cluster"} {
		if after, ok := strings.CutPrefix(rest, section+"_"); ok {
			return section + "." + after
		}
	}
	return rest
}

// EnvName returns the environment variable for a configuration key.
func EnvName(key string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
}

// flatMap is a koanf provider for a map of flat keys ("c2s.listen").
type flatMap map[string]any

// ReadBytes implements koanf.Provider; a map has no byte form.
func (flatMap) ReadBytes() ([]byte, error) {
	return nil, errors.New("config: a map provider has no bytes")
}

// Read implements koanf.Provider.
func (m flatMap) Read() (map[string]any, error) {
	return maps.Unflatten(m, "."), nil
}
