package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/ntc-project/ntc/transport"
)

// home is ntc's state directory: its identity, what it pushed to whom.
func (g *globals) home() string {
	if h := g.v.GetString("home"); h != "" {
		return h
	}
	if d, err := os.UserHomeDir(); err == nil {
		return filepath.Join(d, ".local", "state", "ntc")
	}
	return ".ntc"
}

func newInitCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "init",
		Short: "Create this node's identity (key and certificate)",
		Long: `Init creates this node's identity in its state directory ($NTC_HOME, default
~/.local/state/ntc): a private key and a self-signed certificate. The node's ID
is the SHA-256 of the certificate; peers pin each other by ID:

  office$ ntc init                      prints the office node's ID
  home$   ntc init                      prints the home node's ID
  home$   ntc serve --store ~/vms --allow OFFICE-ID
  office$ ntc push disk.img --to home:7400 --peer HOME-ID

Running init again keeps the existing identity and prints its ID.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			id, created, err := transport.LoadOrCreateIdentity(g.home())
			if err != nil {
				return err
			}
			return g.printID(id.ID(), created)
		},
	}
}

func newIDCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "id",
		Short: "Print this node's ID, for the other side's --peer or --allow",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := transport.LoadIdentity(g.home())
			if err != nil {
				return err
			}
			return g.printID(id.ID(), false)
		},
	}
}

func (g *globals) printID(id transport.ID, created bool) error {
	if g.json {
		return writeJSON(g.stdout, map[string]any{"id": id.String(), "home": g.home(), "created": created})
	}
	if created {
		fmt.Fprintf(g.stderr, "created a new identity in %s\n", g.home())
	}
	_, err := fmt.Fprintln(g.stdout, id)
	return err
}

// nodeName names this node in the versions it makes: its ID when it has an
// identity, else its host name.
func (g *globals) nodeName() string {
	if id, err := transport.LoadIdentity(g.home()); err == nil {
		return id.ID().String()
	}
	if h, err := os.Hostname(); err == nil {
		return h
	}
	return ""
}
