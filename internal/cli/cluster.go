package cli

import (
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/edgeport/edgeport/internal/cluster"
)

func newClusterCmd(stdout io.Writer) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "cluster",
		Short: "Cluster mode's route credentials",
		Args:  cobra.NoArgs,
	}
	var nodes []string
	initCmd := &cobra.Command{
		Use:   "init <dir>",
		Short: "Make the route credentials of a cluster's nodes: a CA, a shared secret and one certificate per node",
		Long: `Make, under <dir>, what the nodes of a cluster need to authenticate and
encrypt their routes: the cluster CA (<dir>/ca) and the shared secret
(<dir>/secret), made once and reused by later runs, and for each node named
by --nodes a directory <dir>/<node> holding ca.crt, the node's tls.crt and
tls.key (valid as long as the CA) and the secret. Start each node with
--cluster-credentials <dir>/<node>; copy that directory (only it) to the
node's machine. Run again with new names to add nodes; existing nodes are
left as they are. The CA's key stays in <dir>/ca: keep <dir> private.`,
		Example: `  edgeport cluster init creds --nodes n1,n2,n3
  edgeport serve --cluster --node-name n1 --cluster-credentials creds/n1 ...`,
		Args: cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			if len(nodes) == 0 {
				return fmt.Errorf("--nodes: name the nodes (the --node-name each will run with)")
			}
			dir := args[0]
			res, err := cluster.InitCredentials(dir, nodes, time.Now())
			if err != nil {
				return err
			}
			if res.CreatedCA {
				fmt.Fprintf(stdout, "created the cluster CA in %s\n", filepath.Join(dir, "ca"))
			}
			if res.CreatedSecret {
				fmt.Fprintf(stdout, "created the cluster secret %s\n", filepath.Join(dir, cluster.SecretFileName))
			}
			for _, n := range res.Created {
				fmt.Fprintf(stdout, "node %s: --cluster-credentials %s\n", n, filepath.Join(dir, n))
			}
			if len(res.Kept) > 0 {
				fmt.Fprintf(stdout, "kept the existing credentials of %s\n", strings.Join(res.Kept, ", "))
			}
			return nil
		},
	}
	initCmd.Flags().StringSliceVar(&nodes, "nodes", nil, "names of the nodes, comma-separated (each node's --node-name)")
	cmd.AddCommand(initCmd)
	return cmd
}
