package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/openqhin/openqhin/participant/match"
)

func newMatchCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "match",
		Short: "Measure the demographic matcher",
	}
	cmd.AddCommand(newMatchEvalCmd(g))
	return cmd
}

// evalOutput is what `match eval -o json` prints.
type evalOutput struct {
	Precision     float64 `json:"precision"`
	Recall        float64 `json:"recall"`
	F1            float64 `json:"f1"`
	PairsTrue     int     `json:"pairs_true"`
	PairsFound    int     `json:"pairs_found"`
	Seconds       float64 `json:"seconds"`
	PairsCompared int     `json:"pairs_compared"`
	PairsCorrect  int     `json:"pairs_correct"`
	Threshold     float64 `json:"threshold"`
	Records       int     `json:"records"`
	Trained       bool    `json:"trained"`
	Prior         float64 `json:"prior"`
}

func newMatchEvalCmd(g *globals) *cobra.Command {
	var (
		train     bool
		threshold float64
	)
	cmd := &cobra.Command{
		Use:   "eval A.csv [B.csv]",
		Short: "Deduplicate one labelled file, or link two, and score the matcher against the truth",
		Long: `Read records from CSV files whose header names any of the columns
id, truth, given, family, birth_date, gender, postal_code, phone,
address_line, city, state (truth, the true entity id, is required; other
columns are ignored). With one file, every pair of its records is a
candidate (deduplication); with two, every pair across them (linkage).
Blocking picks the pairs to compare, the matcher decides each, and the
decisions are scored against the truth: precision, recall and F1 over
record pairs. With --train (the default) the model's m, u and prior are
first fitted to the input by EM; without it the network's default model
decides. Records are scored whatever their birth year.`,
		Example: `  qhinctl match eval people.csv
  qhinctl match eval hospital-a.csv hospital-b.csv -o json
  qhinctl match eval people.csv --train=false`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			a, err := readEvalFile(args[0])
			if err != nil {
				return err
			}
			var b []match.LabeledRecord
			if len(args) == 2 {
				if b, err = readEvalFile(args[1]); err != nil {
					return err
				}
			}
			stderr := cmd.ErrOrStderr()
			opts := match.EvalOptions{Train: train, Threshold: threshold}
			opts.TrainOptions.Progress = func(phase string) { fmt.Fprintln(stderr, "training:", phase) }
			res, err := match.Evaluate(cmd.Context(), a, b, opts)
			if err != nil {
				return err
			}
			out := evalOutput{Precision: res.Precision, Recall: res.Recall, F1: res.F1, PairsTrue: res.PairsTrue,
				PairsFound: res.PairsFound, Seconds: res.Seconds, PairsCompared: res.PairsCompared,
				PairsCorrect: res.PairsCorrect, Threshold: res.Threshold, Records: res.Records,
				Trained: res.Trained != nil, Prior: res.Model.Params().Prior}
			if g.output == "json" {
				enc := json.NewEncoder(cmd.OutOrStdout())
				return enc.Encode(out)
			}
			printEval(cmd.OutOrStdout(), args, out)
			return nil
		},
	}
	cmd.Flags().BoolVar(&train, "train", true, "fit m, u and the prior to the input by EM first")
	cmd.Flags().Float64Var(&threshold, "threshold", 0, "probability a pair needs to be found (default: the model's match threshold)")
	return cmd
}

func readEvalFile(path string) ([]match.LabeledRecord, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	recs, err := match.ReadCSV(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return recs, nil
}

func printEval(w io.Writer, args []string, o evalOutput) {
	mode := "deduplicate " + args[0]
	if len(args) == 2 {
		mode = "link " + args[0] + " with " + args[1]
	}
	model := "the default model"
	if o.Trained {
		model = fmt.Sprintf("a model trained on the input by EM (prior %.3g)", o.Prior)
	}
	fmt.Fprintf(w, "match eval: %s (%d records) with %s\n\n", mode, o.Records, model)
	tw := newTabWriter(w)
	for _, row := range []struct {
		k string
		v any
	}{
		{"pairs compared", o.PairsCompared}, {"pairs true", o.PairsTrue}, {"pairs found", o.PairsFound},
		{"pairs correct", o.PairsCorrect}, {"precision", fmt.Sprintf("%.4f", o.Precision)},
		{"recall", fmt.Sprintf("%.4f", o.Recall)}, {"f1", fmt.Sprintf("%.4f", o.F1)},
		{"threshold", o.Threshold}, {"seconds", fmt.Sprintf("%.2f", o.Seconds)},
	} {
		fmt.Fprintf(tw, "%s\t%v\n", row.k, row.v)
	}
	tw.Flush()
}
