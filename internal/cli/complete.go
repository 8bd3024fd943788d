package cli

import (
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/edgeport/edgeport/internal/config"
)

// Shell completion: `edgeport completion bash|zsh|fish|powershell` (cobra's)
// prints the script; completeResources completes the kinds of get,
// describe and delete, and then the names of that kind's resources, asked
// of the API with the command's own --server, --token and --data-dir.

// completeResources completes KIND and then NAMEs. withAll offers get's
// "all".
func completeResources(withAll bool) func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		kinds := config.Builtin()
		if len(args) == 0 {
			var out []string
			if withAll {
				out = append(out, "all")
			}
			for _, d := range kinds.All() {
				out = append(out, d.Plural, d.Singular())
				out = append(out, d.ShortNames...)
			}
			return prefixed(out, toComplete), cobra.ShellCompDirectiveNoFileComp
		}
		def := kinds.Lookup(args[0])
		if def == nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		var cf clientFlags
		cf.server, _ = cmd.Flags().GetString("server")
		cf.token, _ = cmd.Flags().GetString("token")
		cf.dataDir, _ = cmd.Flags().GetString("data-dir")
		c, err := cf.client()
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		items, err := c.list(cmd.Context(), def, "")
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		var names []string
		for _, o := range items {
			if !slices.Contains(args[1:], o.Metadata.Name) {
				names = append(names, o.Metadata.Name)
			}
		}
		return prefixed(names, toComplete), cobra.ShellCompDirectiveNoFileComp
	}
}

func prefixed(all []string, prefix string) []string {
	var out []string
	for _, s := range all {
		if strings.HasPrefix(s, prefix) {
			out = append(out, s)
		}
	}
	return out
}
