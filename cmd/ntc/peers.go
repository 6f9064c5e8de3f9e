package main

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"

	"github.com/ntc-project/ntc/capture"
	"github.com/ntc-project/ntc/resume"
	"github.com/ntc-project/ntc/transport"
)

// namedKeys are the configuration's named entries, section.NAME.key: the
// peers this node talks to and the VMs it runs.
//
//	peers:
//	  home: {addr: home.example:7400, id: HOME-ID}
//	vms:
//	  web: {qmp: /run/web/qmp.sock}
var namedKeys = map[string]map[string]any{
	"peers": {"addr": "", "id": ""},
	"vms":   {"qmp": "", "domain": "", "connect": "", "overlay-dir": ""},
}

// namedKey returns the zero value of a named entry's key (peers.home.addr),
// and whether key is one.
func namedKey(key string) (any, bool) {
	section, rest, ok := strings.Cut(key, ".")
	if !ok {
		return nil, false
	}
	name, field, ok := strings.Cut(rest, ".")
	if !ok || capture.CheckName(name) != nil {
		return nil, false
	}
	zero, ok := namedKeys[section][field]
	return zero, ok
}

// peer is a peer named in the configuration.
type peer struct {
	Name string
	Addr string
	ID   transport.ID
}

// peerAddr is a peer given by its address and ID (push --to --peer,
// status --peer ID@HOST:PORT) rather than by a name in the configuration.
func peerAddr(addr string, id transport.ID) peer { return peer{Name: addr, Addr: addr, ID: id} }

// peerNamed returns the configuration's peer name (peers.NAME.addr/id).
func (g *globals) peerNamed(name string) (peer, error) {
	if capture.CheckName(name) != nil || !g.v.IsSet("peers."+name) {
		return peer{}, usagef("no peer %q in the configuration%s: add peers.%s.addr (HOST:PORT of its 'ntc serve') and peers.%s.id (its 'ntc id')",
			name, g.configWhere(), name, name)
	}
	p := peer{Name: name, Addr: g.v.GetString("peers." + name + ".addr")}
	id, err := transport.ParseID(g.v.GetString("peers." + name + ".id"))
	if err != nil {
		return peer{}, usagef("peers.%s.id: %v", name, err)
	}
	if p.Addr == "" {
		return peer{}, usagef("peers.%s.addr is not set: the HOST:PORT its 'ntc serve' listens on", name)
	}
	p.ID = id
	return p, nil
}

// peerID reads a node ID, or the name of a peer in the configuration.
func (g *globals) peerID(s string) (transport.ID, error) {
	if id, err := transport.ParseID(s); err == nil {
		return id, nil
	}
	if capture.CheckName(s) == nil && g.v.IsSet("peers."+s+".id") {
		return transport.ParseID(g.v.GetString("peers." + s + ".id"))
	}
	return transport.ID{}, fmt.Errorf("%q is neither a node ID ('ntc id' prints one) nor a peer of the configuration", s)
}

// vmNamed returns the guest name as checkpoint options: the copy of it this
// node runs, resumed from a version it received (a hand-off, or 'ntc resume'
// with the default work directory), else the configuration's vms.NAME.
func (g *globals) vmNamed(ctx context.Context, name string) (guestOptions, error) {
	if capture.CheckName(name) == nil {
		work := filepath.Join(g.home(), "resume", name)
		if _, ok := resume.Running(work); ok {
			return guestOptions{qmp: filepath.Join(work, "qmp.sock"), name: name, method: string(capture.MethodAuto)}, nil
		}
		// A libvirt copy serve's resumer started (resume.libvirt): the
		// domain named after the set.
		if lw := g.copyWorkDir(name); g.v.GetBool("resume.libvirt") && fileExists(filepath.Join(lw, libvirtDomainXML)) {
			if active, err := domainActive(ctx, g.v.GetString("resume.connect"), name); err == nil && active {
				return guestOptions{domain: name, connect: g.v.GetString("resume.connect"), name: name, method: string(capture.MethodAuto)}, nil
			}
		}
	}
	if capture.CheckName(name) != nil || !g.v.IsSet("vms."+name) {
		return guestOptions{}, usagef("no VM %q in the configuration%s: add vms.%s.qmp (its QMP socket) or vms.%s.domain (a libvirt domain)",
			name, g.configWhere(), name, name)
	}
	k := func(f string) string { return g.v.GetString("vms." + name + "." + f) }
	return guestOptions{qmp: k("qmp"), domain: k("domain"), connect: k("connect"), overlayDir: k("overlay-dir"),
		name: name, method: string(capture.MethodAuto)}, nil
}

// repoDir is this node's repository: --repo, the configuration's repo, or
// $NTC_HOME/repo.
func (g *globals) repoDir() string {
	if d := g.v.GetString("repo"); d != "" {
		return d
	}
	return filepath.Join(g.home(), "repo")
}

func (g *globals) configWhere() string {
	if f := g.v.ConfigFileUsed(); f != "" {
		return " (" + f + ")"
	}
	return " (no configuration file was read: --config FILE, $NTC_HOME/ntc.yaml or ~/.config/ntc/ntc.yaml)"
}

// sortedNames lists a section's entry names.
func (g *globals) sortedNames(section string) []string {
	var out []string
	for k := range g.v.GetStringMap(section) {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
