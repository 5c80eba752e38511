package main

import (
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/openqhin/openqhin/broker/purpose"
)

// purposeJSON is one purpose in `qhinctl purposes -o json`, named like the
// protojson of the other commands.
type purposeJSON struct {
	Code     string `json:"code"`
	Display  string `json:"display"`
	Duty     string `json:"responderDuty"`
	PushOnly bool   `json:"pushOnly"`
}

func newPurposesCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "purposes",
		Short: "List the exchange purpose codes the network accepts",
		Long: `List the TEFCA exchange purposes (code system ` + purpose.CodeSystem + `)
a query may carry: code, name, what a responder owes a query of that purpose
(must, should or may answer), and whether the purpose is push-only (sent as a
message, never a query). This is the table qhinctl and the brokers of the same
release are built with; it needs no connection to the network.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			all := purpose.All()
			w := cmd.OutOrStdout()
			if g.output == "json" {
				out := struct {
					CodeSystem string        `json:"codeSystem"`
					Purposes   []purposeJSON `json:"purposes"`
				}{CodeSystem: purpose.CodeSystem}
				for _, p := range all {
					out.Purposes = append(out.Purposes, purposeJSON{Code: p.Code, Display: p.Display, Duty: string(p.Duty), PushOnly: p.PushOnly})
				}
				b, err := json.MarshalIndent(out, "", "  ")
				if err != nil {
					return err
				}
				_, err = fmt.Fprintln(w, string(b))
				return err
			}
			t := &table{tw: newTabWriter(w)}
			t.row("CODE", "PURPOSE", "RESPONDER", "PUSH ONLY")
			for _, p := range all {
				pushOnly := ""
				if p.PushOnly {
					pushOnly = "yes (never a query)"
				}
				t.row(p.Code, p.Display, string(p.Duty)+" answer", pushOnly)
			}
			return t.tw.Flush()
		},
	}
}
