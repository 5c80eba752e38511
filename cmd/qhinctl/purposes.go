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
	Code    string `json:"code"`
	Display string `json:"display"`
	Parent  string `json:"parent,omitempty"`
	Duty    string `json:"responderDuty"`
}

func newPurposesCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "purposes",
		Short: "List the exchange purpose codes the network accepts",
		Long: `List the TEFCA exchange purposes (code system ` + purpose.CodeSystem + `)
with the table's version: code, name, the code it refines, and what a
responder owes a query of that purpose — required (every member answers; one
that declines is reported DENIED, as possible information blocking),
optional (members that list it answer) or push-only (sent as a message, never
a query). A member's purpose list names codes (a code covers its sub-codes)
or "all"; an empty list allows nothing. This is the table qhinctl and the
brokers of the same release are built with; it needs no connection to the
network.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			all := purpose.All()
			w := cmd.OutOrStdout()
			if g.output == "json" {
				out := struct {
					Version    string        `json:"version"`
					CodeSystem string        `json:"codeSystem"`
					Purposes   []purposeJSON `json:"purposes"`
				}{Version: purpose.Version(), CodeSystem: purpose.CodeSystem}
				for _, p := range all {
					out.Purposes = append(out.Purposes, purposeJSON{Code: p.Code, Display: p.Display, Parent: p.Parent, Duty: string(p.Duty)})
				}
				b, err := json.MarshalIndent(out, "", "  ")
				if err != nil {
					return err
				}
				_, err = fmt.Fprintln(w, string(b))
				return err
			}
			t := &table{tw: newTabWriter(w)}
			t.line("exchange purposes, table version %s (%s)", purpose.Version(), purpose.Source())
			t.row("CODE", "PURPOSE", "REFINES", "RESPONDER DUTY")
			for _, p := range all {
				t.row(p.Code, p.Display, p.Parent, string(p.Duty))
			}
			return t.tw.Flush()
		},
	}
}
