package main

import (
	"fmt"
	"os"
	"reflect"
	"slices"
	"strings"
	"time"
)

// configKeys is every key the configuration file (section.key) and the
// environment (NTC_SECTION_KEY) may set, with a value of the type it must
// decode to. configs/ntc.example.yaml describes them; a command reading a
// key that is not here gets it refused at start.
var configKeys = map[string]any{
	"home": "",
	"repo": "",

	"chunk.average":  "",
	"index.readonly": "",

	"serve.listen": "",
	"serve.store":  "",
	"serve.allow":  []string(nil),

	"serve.resume-allow": []string(nil),
	"serve.keep":         "0",
	"serve.images":       "",

	"serve.max-memory":            "",
	"serve.stall-timeout":         time.Duration(0),
	"serve.max-conns":             0,
	"serve.max-conns-per-peer":    0,
	"serve.max-pushes-per-peer":   0,
	"serve.handshakes-per-second": float64(0),
	"serve.metrics-listen":        "",

	"push.to":      "",
	"push.peer":    "",
	"push.bwlimit": "",
	"push.streams": 0,
	"push.conns":   0,

	"checkpoint.qmp":         "",
	"checkpoint.domain":      "",
	"checkpoint.connect":     "",
	"checkpoint.out":         "",
	"checkpoint.name":        "",
	"checkpoint.overlay-dir": "",
	"checkpoint.method":      "",

	"sync.to": "",

	"replicate.every":   time.Duration(0),
	"replicate.bwlimit": "",
	"replicate.keep":    0,

	"replicate.metrics-listen": "",

	"resume.store":   "",
	"resume.name":    "",
	"resume.workdir": "",
	"resume.network": "",
	"resume.qemu":    "",

	"resume.kernel":       "",
	"resume.initrd":       "",
	"resume.bios":         "",
	"resume.user":         "",
	"resume.load-timeout": time.Duration(0),

	"resume.libvirt":     false,
	"resume.connect":     "",
	"resume.persistent":  false,
	"resume.libvirt-dir": "",

	"s3.endpoint": "",
	"pull.from":   "",
	"upload.to":   "",
}

// envName is the environment variable that sets key.
func envName(key string) string {
	return "NTC_" + strings.ToUpper(strings.NewReplacer(".", "_", "-", "_").Replace(key))
}

// checkConfig refuses keys of the configuration file that ntc does not
// know (a typo would otherwise be silently ignored) and values, from the
// file or from NTC_* variables, that do not decode to their key's type.
func (g *globals) checkConfig() error {
	known := make([]string, 0, len(configKeys))
	for k := range configKeys {
		known = append(known, k)
	}
	slices.Sort(known)
	for _, k := range g.v.AllKeys() {
		if zero, ok := namedKey(k); ok {
			if err := g.v.UnmarshalKey(k, reflect.New(reflect.TypeOf(zero)).Interface()); err != nil {
				return usagef("configuration %s: %s = %q: want %s", g.v.ConfigFileUsed(), k, fmt.Sprint(g.v.Get(k)), describeType(zero))
			}
			continue
		}
		if _, ok := configKeys[k]; !ok && g.v.Get(k) != nil { // "serve:" alone is an empty section
			return usagef("configuration %s: unknown key %q (configs/ntc.example.yaml describes every key)%s",
				g.v.ConfigFileUsed(), k, didYouMean("", closest(k, known)))
		}
	}
	for _, k := range known {
		if g.flagChanged(k) {
			continue // the flag parsed it
		}
		val := g.v.Get(k)
		if val == nil {
			continue
		}
		if err := g.decodeKey(k, val); err != nil {
			where := "configuration " + g.v.ConfigFileUsed() + ": " + k
			if env, ok := os.LookupEnv(envName(k)); ok {
				where, val = envName(k), env
			}
			return usagef("%s = %q: want %s", where, fmt.Sprint(val), describeType(configKeys[k]))
		}
	}
	return nil
}

// decodeKey decodes the value val of key into its type.
func (g *globals) decodeKey(key string, val any) error {
	zero := configKeys[key]
	if _, ok := zero.(time.Duration); ok {
		// A bare number would be taken as nanoseconds.
		switch val.(type) {
		case string, time.Duration:
		default:
			return fmt.Errorf("%v is not a duration", val)
		}
	}
	return g.v.UnmarshalKey(key, reflect.New(reflect.TypeOf(zero)).Interface())
}

// flagChanged reports whether the running command was given the flag
// bound to key.
func (g *globals) flagChanged(key string) bool {
	for _, b := range g.bindings {
		if b.key == key && b.cmd.Flags().Changed(b.flag) {
			return true
		}
	}
	return false
}

func describeType(zero any) string {
	switch zero.(type) {
	case int:
		return "a whole number"
	case float64:
		return "a number"
	case time.Duration:
		return "a duration with its unit, like 5s or 1m30s"
	case []string:
		return "a list"
	case bool:
		return "true or false"
	}
	return "a single value"
}
