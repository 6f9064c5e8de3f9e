package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/viper"
)

// globals holds what every subcommand shares: output streams and the one
// viper instance that resolves flags, NTC_* environment variables and the
// configuration file, in that order of precedence.
type globals struct {
	stdout, stderr io.Writer
	v              *viper.Viper
	configFile     string
	json           bool
	verbose        bool
	showVersion    bool
	logFormat      string
	cpuProfile     string
	// bindings wait for the command that runs: several commands bind the
	// same key (serve and ls both read serve.store).
	bindings []binding
}

type binding struct {
	cmd       *cobra.Command
	key, flag string
}

func newGlobals(stdout, stderr io.Writer) *globals {
	v := viper.New()
	v.SetEnvPrefix("NTC")
	v.SetEnvKeyReplacer(strings.NewReplacer(".", "_", "-", "_"))
	v.AutomaticEnv()
	return &globals{stdout: stdout, stderr: stderr, v: v}
}

func newRootCommand(g *globals) *cobra.Command {
	root := &cobra.Command{
		Use:   "ntc",
		Short: "Replicate live QEMU virtual machines by sending only what changed",
		Long: `ntc moves a running virtual machine from one host to another (say, office to home)
by sending only what changed since the last copy.

It indexes disk and memory images into content-addressed chunks (BLAKE3 IDs,
content-defined boundaries), re-reads only the regions that changed, and sends
only the chunks the other side lacks over QUIC.

Start here:
  ntc demo --vm                 see it work: a guest checkpointed live, pushed, resumed
  ntc demo                      the same for a generated disk image file

Move a running VM (QEMU started with -qmp unix:/run/vm.qmp,server=on,wait=off):
  ntc init && ntc id                                    on both machines, once
  ntc serve --store ~/vms --allow OFFICE-ID             at home
  ntc checkpoint --qmp /run/vm.qmp --out ~/ckpt/vm      at the office, the VM running
  ntc push --checkpoint ~/ckpt/vm --to home:7400 --peer HOME-ID
  ntc resume --store ~/vms --name vm                    at home: the VM goes on
  ntc replicate --qmp /run/vm.qmp --out ~/ckpt/vm --to home:7400 --peer HOME-ID
                                                        or keep home a few seconds behind

Images and indexes:
  ntc index disk.img            index an image (writes disk.img.idx)
  ntc index disk.img --prev disk.img.idx --changed 1G+64K
                                re-index reading only around the changes
  ntc diff old.idx new.idx      what a transfer from old to new would send

Configuration comes from flags, then NTC_* environment variables (NTC_CHUNK_AVERAGE),
then the file given by --config (default: $NTC_HOME/ntc.yaml or
~/.config/ntc/ntc.yaml if present). See configs/ntc.example.yaml.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		// Arguments to ntc itself are mistyped commands.
		Args:                       unknownCommand,
		SuggestionsMinimumDistance: suggestDistance,
		RunE: func(cmd *cobra.Command, args []string) error {
			if g.showVersion {
				return runVersion(g)
			}
			return cmd.Help()
		},
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			for _, b := range g.bindings {
				if b.cmd == cmd {
					if err := g.v.BindPFlag(b.key, cmd.Flags().Lookup(b.flag)); err != nil {
						return fmt.Errorf("bind flag %s: %w", b.flag, err)
					}
				}
			}
			if g.cpuProfile != "" {
				f, err := os.Create(g.cpuProfile)
				if err != nil {
					return err
				}
				if err := pprof.StartCPUProfile(f); err != nil {
					return err
				}
			}
			if err := g.loadConfig(); err != nil {
				return err
			}
			return g.checkConfig()
		},
		PersistentPostRun: func(cmd *cobra.Command, args []string) {
			pprof.StopCPUProfile()
		},
	}
	pf := root.PersistentFlags()
	pf.StringVar(&g.configFile, "config", "", "configuration file (YAML)")
	pf.BoolVar(&g.json, "json", false, "print one JSON object instead of text")
	pf.BoolVarP(&g.verbose, "verbose", "v", false, "say more about what is happening")
	pf.StringVar(&g.logFormat, "log-format", logText, "services' log lines (serve, replicate): text or json (for journald and collectors)")
	pf.StringVar(&g.cpuProfile, "cpuprofile", "", "write a CPU profile of this command to FILE")
	pf.MarkHidden("cpuprofile")
	root.Flags().BoolVar(&g.showVersion, "version", false, "print ntc's version (as 'ntc version')")
	root.SetFlagErrorFunc(flagError)
	root.AddCommand(
		newIndexCommand(g),
		newDiffCommand(g),
		newDemoCommand(g),
		newInitCommand(g),
		newIDCommand(g),
		newServeCommand(g),
		newSyncCommand(g),
		newPushCommand(g),
		newReplicateCommand(g),
		newLsCommand(g),
		newBenchCommand(g),
		newCheckpointCommand(g),
		newResumeCommand(g),
		newKeeperCommand(),
		newVersionCommand(g),
		newStatusCommand(g),
		newCheckCommand(g),
		newForgetCommand(g),
		newRestoreCommand(g),
		newPullCommand(g), newUploadCommand(g),
	)
	for _, c := range root.Commands() {
		if check := c.Args; check != nil {
			c.Args = func(cmd *cobra.Command, args []string) error { return asUsage(check(cmd, args)) }
		}
	}
	return root
}

// asUsage makes err, a mistake in how ntc was called, a usageError.
func asUsage(err error) error {
	if _, ok := errors.AsType[usageError](err); err == nil || ok {
		return err
	}
	return usageError{err}
}

func (g *globals) loadConfig() error {
	path := g.configFile
	if path == "" {
		for _, cand := range defaultConfigPaths() {
			if _, err := os.Stat(cand); err == nil {
				path = cand
				break
			}
		}
	}
	if path == "" {
		return nil
	}
	g.v.SetConfigFile(path)
	if err := g.v.ReadInConfig(); err != nil {
		var nf viper.ConfigFileNotFoundError
		if errors.As(err, &nf) || os.IsNotExist(err) {
			return usagef("configuration file %s not found", path)
		}
		return fmt.Errorf("read configuration %s: %w (see configs/ntc.example.yaml for the format)", path, err)
	}
	return nil
}

func defaultConfigPaths() []string {
	var out []string
	if h := os.Getenv("NTC_HOME"); h != "" {
		out = append(out, filepath.Join(h, "ntc.yaml"))
	}
	if d, err := os.UserConfigDir(); err == nil {
		out = append(out, filepath.Join(d, "ntc", "ntc.yaml"))
	}
	return out
}

// bind makes a flag's value resolvable through viper under key when cmd
// runs.
func (g *globals) bind(cmd *cobra.Command, key, flag string) {
	g.bindings = append(g.bindings, binding{cmd, key, flag})
}
