/* A node of the cluster: its lifecycle (open and mount the volume, listen,
 * serve, stop) and the accept loop. The rooms it delegates to are listed
 * in node-int.h. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "node-int.h"
#include <sys/vfs.h>
#include "resync/fileio.h"
#include "resync/macro.h"

/* A FUSE mount left behind by a daemon that was killed answers ENOTCONN
 * (statfs always reaches the file system; stat may be answered from the
 * kernel's cache): detach it, so that the volume is not mounted on top of
 * a dead one. */
static int node_mount_unstale(const char *mount)
{
	struct statfs sf;

	if (statfs(mount, &sf) == 0 || errno != ENOTCONN)
		return 0;
	log_warning("'%s' is a stale mount (its daemon died): detaching it", mount);
	return fusefs_unmount_lazy(mount);
}

/* The library does not log: a busy mount's wait at stop is said here. */
static void node_on_wait(void *arg, const char *why, unsigned waited_ms, unsigned limit_ms)
{
	log_warning("%s", why);
}

static void *accept_thread(void *arg)
{
	struct node *n = arg;
	char err[512];

	while (!atomic_load(&n->stopping)) {
		struct peer_conn *c = NULL;
		struct session *s;
		pthread_t t;
		int r;

		r = peer_listener_accept(n->listener, 250, err, sizeof(err), &c);
		if (r == -ETIMEDOUT)
			continue;
		if (r < 0) {
			log_warning("%s", err[0] ? err : strerror(-r));
			continue;
		}
		s = calloc(1, sizeof(*s));
		if (!s) {
			peer_conn_free(c);
			continue;
		}
		s->n = n;
		s->c = c;
		atomic_fetch_add(&n->sessions, 1);
		if (pthread_create(&t, NULL, session_thread, s)) {
			atomic_fetch_sub(&n->sessions, 1);
			peer_conn_free(c);
			free(s);
			continue;
		}
		pthread_detach(t);
	}
	return NULL;
}

/* ---- lifecycle ---- */

int node_new(const struct cluster_config *cfg, const char *name, struct node **ret)
{
	struct node *n;
	struct fusefs_opts fo = {0};
	char err[512];
	int r;

	n = calloc(1, sizeof(*n));
	if (!n)
		return -ENOMEM;
	pthread_mutex_init(&n->lock, NULL);
	n->cfg = cfg;
	n->self = cluster_config_node(cfg, name);
	if (!n->self) {
		log_error("'%s' has no node '%s'", cfg->path, name);
		r = -EINVAL;
		goto fail;
	}
	n->is_primary = cfg->primary && !strcmp(cfg->primary, name);
	if (!n->self->mount) {
		log_error("%s:%u: node '%s' has no 'mount'", cfg->path, n->self->line, name);
		r = -EINVAL;
		goto fail;
	}
	if (cfg->insecure) {
		log_warning("insecure = true in '%s': peer traffic is plaintext (tests and benchmarks only)",
		      cfg->path);
	} else {
		r = secret_load(cfg->secret_file, err, sizeof(err), &n->secret);
		if (r < 0) {
			log_error("%s", err);
			goto fail;
		}
	}
	r = peer_ctx_new(cfg, n->secret, &n->ctx);
	if (r < 0) {
		log_error("cannot set up the peer transport: %s", strerror(-r));
		goto fail;
	}
	if (asprintf(&n->state_path, "%s.resync-node", n->self->volume) < 0) {
		n->state_path = NULL;
		r = -ENOMEM;
		goto fail;
	}
	node_state_load(n);
	r = node_mount_unstale(n->self->mount);
	if (r < 0) {
		log_error("cannot detach the stale mount '%s': %s", n->self->mount, strerror(-r));
		goto fail;
	}
	r = mkdir_p(n->self->mount, 0755);
	if (r < 0) {
		log_error("cannot create '%s': %s", n->self->mount, strerror(-r));
		goto fail;
	}
	if (fusefs_mountpoint_check(n->self->mount) == -EBUSY) {
		log_error("'%s' is already a mount point (a volume or another file system is "
			  "mounted there): not mounting on top of it",
			  n->self->mount);
		r = -EBUSY;
		goto fail;
	}
	fo.image = n->self->volume;
	fo.on_wait = node_on_wait;
	fo.on_wait_arg = n;
	fo.mountpoint = n->self->mount;
	fo.meta.block_size = cfg->block_size;
	r = fusefs_new(&fo, &n->fs);
	if (r == -EBUSY) {
		log_error("'%s' is in use by another writer (resyncfs, resyncd or resync-diff)",
		      n->self->volume);
		goto fail;
	}
	if (r < 0) {
		log_error("cannot serve '%s' at '%s': %s", n->self->volume, n->self->mount, strerror(-r));
		goto fail;
	}
	if (n->is_primary) {
		struct meta_info mi;

		meta_info_get(node_meta(n), &mi);
		if (meta_uuid_is_null(&mi.generation)) {
			struct meta_uuid g;

			r = meta_uuid_random(&g);
			if (r >= 0)
				r = meta_generation_set(node_meta(n), &g);
			if (r < 0) {
				log_error("cannot start a generation for '%s': %s", n->self->volume,
				      strerror(-r));
				goto fail;
			}
		}
		if (mi.state != META_STATE_UPTODATE) {
			r = meta_state_set(node_meta(n), META_STATE_UPTODATE);
			if (r < 0)
				goto fail;
		}
	}
	tree_file_load(n);
	r = fusefs_start(n->fs);
	if (r < 0) {
		log_error("cannot serve '%s': %s", n->self->mount, strerror(-r));
		goto fail;
	}
	/* Events before any thread can publish; notifications and metrics
	 * follow them (a notifier that cannot start is logged, not fatal). */
	r = event_bus_new(cfg->name, &n->bus);
	if (r < 0)
		goto fail;
	{
		struct notify_opts no = {.cfg = cfg, .node = name, .bus = n->bus};
		struct metrics_opts mo = {.cfg = cfg, .node = name, .listen = n->self->metrics,
					  .bus = n->bus, .meta = node_meta(n)};

		if (notify_new(&no, &n->notify) < 0)
			n->notify = NULL;
		if (n->self->metrics) {
			r = metrics_new(&mo, &n->metrics);
			if (r < 0) {
				log_error("cannot serve metrics at '%s': %s", n->self->metrics, strerror(-r));
				goto fail;
			}
		}
	}
	r = peer_listener_new(n->ctx, n->self->host, n->self->port, err, sizeof(err), &n->listener);
	if (r < 0) {
		log_error("%s", err);
		goto fail;
	}
	r = pthread_create(&n->accept_thread, NULL, accept_thread, n);
	if (r) {
		r = -r;
		goto fail;
	}
	n->accept_started = true;
	if (n->self->control) {
		r = control_server_new(n->self->control, cfg->name, node_commands, node_commands_n,
				       n, &n->ctl);
		if (r < 0) {
			log_error("cannot listen on '%s': %s", n->self->control, strerror(-r));
			goto fail;
		}
	}
	log_info("node '%s' of cluster '%s' (%s) serving '%s' at '%s', peers at '%s'", name,
	      cfg->name, n->is_primary ? "primary" : "secondary", n->self->volume,
	      n->self->mount, n->self->address);
	*ret = n;
	return 0;
fail:
	node_stop(n);
	node_free(n);
	return r;
}

int node_stop(struct node *n)
{
	uint64_t deadline;
	int r = 0;

	if (!n || n->stopped)
		return 0;
	n->stopped = true;
	atomic_store(&n->stopping, true);
	atomic_store(&n->cancel, true);
	control_server_free(n->ctl);
	n->ctl = NULL;
	metrics_free(n->metrics);
	n->metrics = NULL;
	if (n->accept_started)
		pthread_join(n->accept_thread, NULL);
	n->accept_started = false;
	deadline = clock_usec() + NODE_STOP_WAIT_MS * 1000ull;
	while (atomic_load(&n->sessions) > 0 && clock_usec() < deadline)
		usleep(10000);
	if (atomic_load(&n->sessions) > 0) {
		/* A session still blocked on its peer: leave the volume to the
		 * process's exit rather than free it under the session. */
		log_error("a peer session did not end in time; metadata left unclean");
		n->fs = NULL;
		return -EBUSY;
	}
	if (n->fs) {
		tree_file_save(n);
		r = fusefs_stop(n->fs);
		if (r == -EBUSY)
			log_warning("'%s' was detached while busy: its metadata is left unclean",
				    n->self->volume);
		else if (r < 0)
			log_error("cannot leave clean metadata for '%s': %s", n->self->volume,
			      strerror(-r));
	}
	return r;
}

void node_free(struct node *n)
{
	if (!n)
		return;
	metrics_free(n->metrics);
	notify_free(n->notify);
	/* A session that outlived node_stop() may still publish. */
	if (atomic_load(&n->sessions) == 0)
		event_bus_free(n->bus);
	peer_listener_free(n->listener);
	fusefs_free(n->fs);
	peer_ctx_free(n->ctx);
	secret_free(n->secret);
	free(n->state_path);
	tree_cache_release(&n->tcache);
	pthread_mutex_destroy(&n->lock);
	free(n);
}
