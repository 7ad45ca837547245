"""`pulumi up` of a kubernetes-target stack against a live API server and the real KubeRay
operator (tests/k8s/harness.py): every object is created, the operator readies the
RayCluster, the load balancer gets an address; a second preview changes nothing; a light
change updates in place; a node-pool change updates the worker group and leaves the head
alone; the policy pack refuses an undeclared public load balancer; destroy leaves nothing.

One stack goes through these in order (a module-scoped fixture): each `up` against the
control plane costs tens of seconds on two cores.
"""

from __future__ import annotations

import time

import pytest
from kubernetes.client.rest import ApiException

from tests.integration.harness import POLICY_PACK
from tests.k8s.harness import KubernetesStack, api, control_plane_down, control_plane_up, wait_for

pytestmark = pytest.mark.k8s

CLUSTER = "gpuserve-gpu"  # the RayCluster of pool "gpu"


@pytest.fixture(scope="module")
def control_plane():
    started = control_plane_up()
    yield api()
    if started:
        control_plane_down()


@pytest.fixture(scope="module")
def deployed(control_plane, tmp_path_factory):
    stack = KubernetesStack(tmp_path_factory.mktemp("k8s"))
    try:
        first = stack.up(policy_packs=[POLICY_PACK])
        yield stack, first, control_plane
    finally:
        # Whatever a test did: nothing of the stack outlives the module.
        if stack.resources():
            stack.destroy()


def ray_cluster(custom, ns: str) -> dict:
    return custom.get_namespaced_custom_object("ray.io", "v1", ns, "rayclusters", CLUSTER)


def pods(core, ns: str, selector: str) -> dict[str, str]:
    return {p.metadata.name: p.metadata.uid for p in core.list_namespaced_pod(ns, label_selector=selector).items}


def test_up_creates_every_object_and_the_operator_readies_the_raycluster(deployed):
    stack, first, (core, apps, custom, policy) = deployed
    ns = stack.namespace
    assert first.changes.get("create", 0) >= 10, first.changes
    assert core.read_namespace(ns).status.phase == "Active"
    assert core.read_namespaced_secret(f"{CLUSTER}-dashboard-token", ns).data["auth_token"]
    assert apps.read_namespaced_deployment(f"{CLUSTER}-splitter", ns).status.ready_replicas == 2
    assert policy.read_namespaced_pod_disruption_budget(f"{CLUSTER}-splitter", ns).spec.min_available == 1
    plugin = apps.read_namespaced_daemon_set("nvidia-device-plugin-gpu", "kube-system")
    assert plugin.status.desired_number_scheduled == 3  # one per fake GPU node, not the CPU node
    state = wait_for("the RayCluster ready", lambda: ray_cluster(custom, ns).get("status", {}).get("state") == "ready"
                     and ray_cluster(custom, ns)["status"], timeout_s=180)
    assert state["readyWorkerReplicas"] >= 1
    # The operator made the head (no GPU) and the workers (on GPU nodes only).
    workers = core.list_namespaced_pod(ns, label_selector=f"ray.io/cluster={CLUSTER},ray.io/node-type=worker").items
    assert workers and {p.spec.node_name for p in workers} <= {"kwok-gpu-0", "kwok-gpu-1", "kwok-gpu-2"}


def test_the_load_balancer_gets_an_address_and_admits_only_its_allowlist(deployed):
    stack, _, (core, *_rest) = deployed
    service = core.read_namespaced_service(f"{CLUSTER}-serve", stack.namespace)
    assert service.spec.type == "LoadBalancer"
    assert service.spec.load_balancer_source_ranges == ["127.0.0.1/32"]
    assert service.status.load_balancer.ingress[0].ip == "127.0.0.1"
    assert stack.outputs()["gpu_http_url"] == "http://127.0.0.1"


def test_the_rollout_provider_finds_the_operators_head_pod_through_the_api_server(deployed):
    # The half of the rollout provider's Kubernetes path that runs here: the dashboard
    # reference of the stack, resolved through the API server to KubeRay's head pod with
    # the stack's own kubeconfig. The port-forward stream itself needs a kubelet (kwok has
    # none): README, "The kubernetes target", known gap.
    from runtime.k8s_forward import DashboardRef, api_client, head_pod
    from tests.k8s.harness import KUBECONFIG

    stack, _, (core, *_rest) = deployed
    ref = DashboardRef.parse(stack.outputs()["gpu_dashboard"])
    assert (ref.namespace, ref.cluster, ref.port) == (stack.namespace, CLUSTER, 8265)
    from kubernetes import client

    name = head_pod(client.CoreV1Api(api_client(KUBECONFIG.read_text())), ref)
    assert name in pods(core, stack.namespace, f"ray.io/cluster={CLUSTER},ray.io/node-type=head")


def test_a_second_preview_changes_nothing(deployed):
    stack, *_ = deployed
    again = stack.preview(policy_packs=[POLICY_PACK])
    assert again.changes == {}, again.steps


def test_a_light_change_updates_the_splitter_in_place(deployed):
    stack, _, (core, apps, custom, policy) = deployed
    before = apps.read_namespaced_deployment(f"{CLUSTER}-splitter", stack.namespace).metadata.uid
    stack.kubernetes = {"splitter_replicas": 3}
    stack.write_config()
    run = stack.up(policy_packs=[POLICY_PACK])
    assert run.changes == {"update": 1}, run.steps
    after = apps.read_namespaced_deployment(f"{CLUSTER}-splitter", stack.namespace)
    assert after.metadata.uid == before and after.spec.replicas == 3


def test_a_node_pool_change_updates_the_worker_group_and_leaves_the_head_alone(deployed):
    stack, _, (core, apps, custom, policy) = deployed
    ns = stack.namespace
    before = ray_cluster(custom, ns)
    heads = pods(core, ns, f"ray.io/cluster={CLUSTER},ray.io/node-type=head")
    assert heads
    stack.node_pool = {"worker_cpu": "3", "min_nodes": 2}
    stack.write_config()
    run = stack.up(policy_packs=[POLICY_PACK])
    assert ("replace", "kubernetes:ray.io/v1:RayCluster") not in run.steps
    assert ("update", "kubernetes:ray.io/v1:RayCluster") in run.steps, run.steps
    after = ray_cluster(custom, ns)
    assert after["metadata"]["uid"] == before["metadata"]["uid"]
    group = after["spec"]["workerGroupSpecs"][0]
    assert (group["minReplicas"], group["maxReplicas"]) == (2, 2)
    assert group["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"] == "3"
    assert after["spec"]["headGroupSpec"] == before["spec"]["headGroupSpec"]
    # KubeRay replaces workers whose template changed; the head pod stays the same pod.
    time.sleep(5)
    assert pods(core, ns, f"ray.io/cluster={CLUSTER},ray.io/node-type=head") == heads


def test_the_policy_pack_refuses_an_undeclared_public_load_balancer_here_too(deployed):
    stack, *_ = deployed
    # No internal annotation of any cloud and not declared public: on any cluster that
    # is an internet-facing load balancer nobody asked for.
    stack.kubernetes = {"splitter_replicas": 3, "public_load_balancer": False, "load_balancer_source_ranges": []}
    stack.write_config()
    run = stack.preview(check=False, policy_packs=[POLICY_PACK])
    assert not run.ok
    assert {e.policy_name for e in run.policy_violations} == {"lb-internal-unless-declared"}, run.report()
    assert any("must be internal unless declared public" in e.message for e in run.policy_violations)
    # ... and a public one without an allowlist never gets that far: the config refuses it.
    stack.kubernetes = {"splitter_replicas": 3, "load_balancer_source_ranges": []}
    stack.write_config()
    run = stack.preview(check=False, policy_packs=[POLICY_PACK])
    assert not run.ok and "gpuserve:kubernetes.load_balancer_source_ranges: got []" in run.log, run.report()
    stack.kubernetes = {"splitter_replicas": 3}
    stack.write_config()


def test_destroy_finishes_within_a_minute_and_leaves_no_object(deployed):
    stack, _, (core, apps, custom, policy) = deployed
    ns = stack.namespace
    started = time.monotonic()
    stack.destroy()
    took = time.monotonic() - started
    assert took < 60, f"destroy took {took:.1f} s"
    with pytest.raises(ApiException) as gone:
        core.read_namespace(ns)
    assert gone.value.status == 404
    assert not custom.list_namespaced_custom_object("ray.io", "v1", ns, "rayclusters")["items"]
    assert not [d for d in apps.list_namespaced_daemon_set("kube-system").items
                if d.metadata.name == "nvidia-device-plugin-gpu"]
    assert not core.list_pod_for_all_namespaces(label_selector=f"ray.io/cluster={CLUSTER}").items
    assert stack.resources() == []


def test_install_kuberays_objects_are_accepted_by_the_api_server(control_plane, tmp_path):
    # install_kuberay: true on a real API server, short of a second operator: the release's
    # CRDs and the operator's RBAC and Deployment, server-side applied as a dry run (the
    # control plane has the CRDs already and runs the operator as a process).
    import subprocess

    import yaml

    from components.kubernetes import kuberay_operator
    from tests.integration.harness import REPO
    from tests.k8s.harness import KUBECONFIG

    crds, role = kuberay_operator.release_files()
    objects = kuberay_operator.operator_objects("default", role, kuberay_operator.kuberay_version())
    manifest = tmp_path / "kuberay.yaml"
    manifest.write_text(yaml.safe_dump_all([*crds, *objects.values()]))
    result = subprocess.run([str(REPO / ".tools" / "k8s" / "bin" / "kubectl"), "--kubeconfig", str(KUBECONFIG),
                             "apply", "--server-side", "--force-conflicts", "--dry-run=server", "-f", str(manifest)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    applied = result.stdout.splitlines()
    assert len(applied) == 8 and all("serverside-applied (server dry run)" in line for line in applied), applied
