"""Code that runs inside the cluster, in the Router's replicas: the split of a service's
traffic between its versions. It imports nothing from the operator's side (`runtime/`,
`components/`, `policies/`); what both sides agree on lives in `traffic.protocol`."""
