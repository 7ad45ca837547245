// Command fakelb is gpuserve's stand-in for a cloud LoadBalancer controller on the local
// test control plane (scripts/k8s-up).
//
// There is no real load balancer here: nothing listens on the address it reports, and no
// traffic is routed. It only does what a cloud controller's status update does, so that
// clients that wait for a LoadBalancer Service to get an address (pulumi-kubernetes' await
// logic, tests) see one: it watches Services of type LoadBalancer in all namespaces and sets
// status.loadBalancer.ingress to [{"ip": "127.0.0.1"}].
//
// It tolerates an API server that is not up yet (client-go's reflector retries with backoff)
// and exits 0 on SIGTERM or SIGINT.
//
// Usage: fakelb --kubeconfig PATH [--ip 127.0.0.1]
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"
)

func main() {
	kubeconfig := flag.String("kubeconfig", os.Getenv("KUBECONFIG"), "kubeconfig of the cluster")
	ip := flag.String("ip", "127.0.0.1", "the address to report as the LoadBalancer ingress (nothing listens on it)")
	flag.Parse()
	if *kubeconfig == "" {
		fmt.Fprintln(os.Stderr, "fakelb: --kubeconfig (or KUBECONFIG) is required")
		os.Exit(2)
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		fmt.Fprintf(os.Stderr, "fakelb: reading kubeconfig %s: %v\n", *kubeconfig, err)
		os.Exit(2)
	}
	cfg.UserAgent = "gpuserve-fakelb"
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		fmt.Fprintf(os.Stderr, "fakelb: client: %v\n", err)
		os.Exit(2)
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	factory := informers.NewSharedInformerFactory(client, 10*time.Minute)
	services := factory.Core().V1().Services()
	queue := workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[string]())
	enqueue := func(obj any) {
		if key, err := cache.MetaNamespaceKeyFunc(obj); err == nil {
			queue.Add(key)
		}
	}
	if _, err := services.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    enqueue,
		UpdateFunc: func(_, obj any) { enqueue(obj) },
	}); err != nil {
		fmt.Fprintf(os.Stderr, "fakelb: informer: %v\n", err)
		os.Exit(1)
	}
	// The reflector lists and watches with backoff until the API server answers.
	factory.Start(ctx.Done())
	klog.Infof("fakelb: waiting for the API server (%s)", cfg.Host)
	if !cache.WaitForCacheSync(ctx.Done(), services.Informer().HasSynced) {
		klog.Info("fakelb: stopped before the first sync")
		factory.Shutdown()
		return
	}
	klog.Infof("fakelb: watching Services of type LoadBalancer; ingress ip %s", *ip)

	sync := func(key string) error {
		ns, name, err := cache.SplitMetaNamespaceKey(key)
		if err != nil {
			return nil
		}
		svc, err := services.Lister().Services(ns).Get(name)
		if err != nil || svc.DeletionTimestamp != nil || svc.Spec.Type != corev1.ServiceTypeLoadBalancer {
			return nil // gone, going, or not ours
		}
		ing := svc.Status.LoadBalancer.Ingress
		if len(ing) == 1 && ing[0].IP == *ip && ing[0].Hostname == "" {
			return nil
		}
		patch, _ := json.Marshal(map[string]any{
			"status": map[string]any{"loadBalancer": map[string]any{
				"ingress": []map[string]string{{"ip": *ip}},
			}},
		})
		_, err = client.CoreV1().Services(ns).Patch(ctx, name, types.MergePatchType, patch,
			metav1.PatchOptions{FieldManager: "gpuserve-fakelb"}, "status")
		if err == nil {
			klog.Infof("fakelb: %s/%s -> %s", ns, name, *ip)
		}
		return err
	}

	go wait.UntilWithContext(ctx, func(ctx context.Context) {
		for {
			key, quit := queue.Get()
			if quit {
				return
			}
			if err := sync(key); err != nil {
				klog.Warningf("fakelb: %s: %v (will retry)", key, err)
				queue.AddRateLimited(key)
			} else {
				queue.Forget(key)
			}
			queue.Done(key)
		}
	}, time.Second)

	<-ctx.Done()
	queue.ShutDown()
	factory.Shutdown()
	klog.Info("fakelb: stopped")
}
