/* resyncd: one node of a resync cluster. Thin: options, config, signals;
 * the node (node.c) does the work. */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <unistd.h>
#include <string.h>
#include <systemd/sd-daemon.h>

#include "config.h"
#include "node.h"

static const char usage[] =
	"usage: resyncd --config FILE --node NAME [--foreground]\n"
	"Run node NAME of the cluster described by FILE: serve its volume through\n"
	"FUSE at its mount, talk to the other nodes at its address, and answer\n"
	"resyncctl on its control socket. SIGTERM or SIGINT stops it cleanly.\n";

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"config", required_argument, NULL, 'c'},
		{"node", required_argument, NULL, 'n'},
		{"foreground", no_argument, NULL, 'f'},
		{"help", no_argument, NULL, 'h'},
		{0},
	};
	const char *config = NULL, *name = NULL;
	struct cluster_config *cfg = NULL;
	struct node *n = NULL;
	char err[1024];
	sigset_t set;
	int c, r, sig;

	while ((c = getopt_long(argc, argv, "c:n:fh", longopts, NULL)) != -1) {
		switch (c) {
		case 'c':
			config = optarg;
			break;
		case 'n':
			name = optarg;
			break;
		case 'f':
			/* resyncd always stays in the foreground; a service
			 * manager runs it. */
			break;
		case 'h':
			fputs(usage, stdout);
			return 0;
		default:
			fputs(usage, stderr);
			return 2;
		}
	}
	if (!config || !name || optind != argc) {
		fputs(usage, stderr);
		return 2;
	}
	r = cluster_config_load(config, err, sizeof(err), &cfg);
	if (r < 0) {
		if (err[0])
			fprintf(stderr, "resyncd: %s\n", err);
		else
			fprintf(stderr, "resyncd: cannot load '%s': %s\n", config, strerror(-r));
		return 1;
	}

	/* Signals are taken here with sigwait; every thread blocks them. */
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);

	r = node_new(cfg, name, &n);
	if (r < 0) {
		sd_notifyf(0, "STATUS=failed to start node '%s': %s", name, strerror(-r));
		cluster_config_free(cfg);
		return 1;
	}
	/* Under systemd (Type=notify): ready once the mount, the peer port
	 * and the control socket are up. A no-op elsewhere. */
	sd_notifyf(0, "READY=1\nSTATUS=serving node '%s' of cluster '%s' (%s)", name, cfg->name,
		   cluster_config_primary_is(cfg, name) ? "primary" : "secondary");
	do {
		if (sigwait(&set, &sig) != 0)
			sig = 0;
	} while (sig != SIGTERM && sig != SIGINT);
	fprintf(stderr, "%sresyncd: stopping node '%s'\n", isatty(2) ? "" : "<6>", name);
	sd_notifyf(0, "STOPPING=1\nSTATUS=stopping node '%s'", name);
	r = node_stop(n);
	node_free(n);
	cluster_config_free(cfg);
	return r < 0 ? 1 : 0;
}
