package main

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/openqhin/openqhin/broker/client"
	"github.com/openqhin/openqhin/participant/match"
	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

func newLocatorCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "locator", Short: "The record locator: linkage keys and the tokens members published"}
	keys := &cobra.Command{Use: "keys", Short: "Add or retire the network's linkage keys (operators)"}
	keys.AddCommand(
		newLocatorKeySetCmd(g, "add", qhinv1.LinkageKeyState_LINKAGE_KEY_STATE_ACTIVE,
			"Add a linkage key (by its id) to the network, or make it active again"),
		newLocatorKeySetCmd(g, "retire", qhinv1.LinkageKeyState_LINKAGE_KEY_STATE_RETIRED,
			"Retire a linkage key: members may only withdraw its tokens"),
	)
	cmd.AddCommand(newLocatorKeygenCmd(), keys, newLocatorStatusCmd(g))
	return cmd
}

// readLinkageKey reads a linkage key file.
func readLinkageKey(path string) (*match.LinkageKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("linkage key: %w", err)
	}
	k, err := match.ParseLinkageKey(b)
	if err != nil {
		return nil, fmt.Errorf("linkage key %s: %w", path, err)
	}
	return k, nil
}

// writeLinkageKey writes a new linkage key to path, which must not exist.
func writeLinkageKey(path string) (*match.LinkageKey, error) {
	k, err := match.GenerateLinkageKey()
	if err != nil {
		return nil, err
	}
	text, _ := k.MarshalText()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("linkage key: %w", err)
	}
	if _, err := f.Write(text); err != nil {
		f.Close()
		return nil, err
	}
	return k, f.Close()
}

// linkageKey is the linkage key the config names, or nil.
func (g *globals) linkageKey(cfg *client.Config) (*match.LinkageKey, error) {
	if cfg.LinkageKeyFile == "" {
		return nil, nil
	}
	return readLinkageKey(cfg.LinkageKeyFile)
}

func newLocatorKeygenCmd() *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "keygen",
		Short: "Make a new network linkage key (for the members, never the brokers)",
		Long: `Write a new random 256-bit linkage key to --out (mode 0600; an existing file is
never overwritten) and print its id. Every member gets the key
(qhin-participant --linkage-key-file), qhinctl reads it from its config
(linkage_key_file) to add tokens to queries, and the operator adds its id to
the network (qhinctl locator keys add). The brokers never see the key.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			k, err := writeLinkageKey(out)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %s: linkage key %s\n", out, k.ID())
			return nil
		},
	}
	cmd.Flags().StringVar(&out, "out", "linkage.key", "file to write the key to")
	return cmd
}

func newLocatorKeySetCmd(g *globals, use string, st qhinv1.LinkageKeyState, short string) *cobra.Command {
	var keyFile string
	cmd := &cobra.Command{
		Use:   use + " [KEY_ID]",
		Short: short,
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var id string
			switch {
			case len(args) == 1 && keyFile == "":
				id = args[0]
			case len(args) == 0 && keyFile != "":
				k, err := readLinkageKey(keyFile)
				if err != nil {
					return err
				}
				id = k.ID()
			default:
				return errors.New("name the key by its id or by --key-file, not both")
			}
			return withOperator(g, cmd, func(conn *client.Conn) error {
				ctx, cancel := g.callContext(cmd.Context())
				defer cancel()
				resp, err := qhinv1.NewLocatorClient(conn).SetLinkageKey(ctx, &qhinv1.SetLinkageKeyRequest{KeyId: id, State: st, RequestId: newRequestID()})
				if err != nil {
					return err
				}
				return g.print(cmd.OutOrStdout(), resp, func(t *table) { printKeys(t, []*qhinv1.LinkageKey{resp.Key}) })
			})
		},
	}
	cmd.Flags().StringVar(&keyFile, "key-file", "", "take the id of the key in this file")
	return cmd
}

func keyStateName(s qhinv1.LinkageKeyState) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "LINKAGE_KEY_STATE_"))
}

func printKeys(t *table, keys []*qhinv1.LinkageKey) {
	t.row("KEY ID", "STATE", "NUMBER", "ADDED", "UPDATED")
	for _, k := range keys {
		t.row(k.KeyId, keyStateName(k.State), k.Number, k.CreatedAt.AsTime().Local().Format(time.DateTime),
			k.UpdatedAt.AsTime().Local().Format(time.DateTime))
	}
}

func newLocatorStatusCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "List the linkage keys and the tokens each member holds in the locator",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withOperator(g, cmd, func(conn *client.Conn) error {
				ctx, cancel := g.callContext(cmd.Context())
				defer cancel()
				resp, err := qhinv1.NewLocatorClient(conn).LocatorStatus(ctx, &qhinv1.LocatorStatusRequest{})
				if err != nil {
					return err
				}
				return g.print(cmd.OutOrStdout(), resp, func(t *table) {
					printKeys(t, resp.Keys)
					t.line("")
					t.row("MEMBER", "TOKENS")
					for _, m := range resp.Members {
						t.row(m.ParticipantId, m.Tokens)
					}
				})
			})
		},
	}
}
