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

/* Join and free the sessions that ended by themselves. */
static void node_sessions_reap(struct node *n)
{
	for (;;) {
		struct session *s;

		pthread_mutex_lock(&n->sessions_lock);
		s = n->sessions_ended;
		if (s)
			n->sessions_ended = s->next;
		pthread_mutex_unlock(&n->sessions_lock);
		if (!s)
			return;
		pthread_join(s->thread, NULL);
		free(s);
	}
}

/* Sleep ms, or less when the node stops. */
static void node_accept_pause(struct node *n, unsigned ms)
{
	for (unsigned slept = 0; slept < ms && !atomic_load(&n->stopping); slept += 50)
		usleep(50000);
}

/* Start a session thread for c (taken), listed in n->sessions; or close c
 * at once when NODE_UNAUTH_MAX connections have not said hello yet. */
static void node_session_start(struct node *n, struct peer_conn *c, uint64_t *warned,
			       unsigned *dropped)
{
	struct session *s;
	int r;

	pthread_mutex_lock(&n->sessions_lock);
	if (n->sessions_unauth >= NODE_UNAUTH_MAX) {
		pthread_mutex_unlock(&n->sessions_lock);
		(*dropped)++;
		if (!*warned || clock_usec() - *warned >= NODE_UNAUTH_WARN_USEC) {
			log_warning("closed the connection from %s: %u connections have not "
				    "authenticated yet (the limit); %u closed so since the last warning",
				    peer_conn_remote(c), (unsigned)NODE_UNAUTH_MAX, *dropped);
			*warned = clock_usec();
			*dropped = 0;
		}
		peer_conn_free(c);
		return;
	}
	s = calloc(1, sizeof(*s));
	if (!s) {
		pthread_mutex_unlock(&n->sessions_lock);
		log_warning("closed the connection from %s: %s", peer_conn_remote(c),
			    strerror(ENOMEM));
		peer_conn_free(c);
		return;
	}
	s->n = n;
	s->c = c;
	s->unauth = true;
	/* Listed before the thread can end (it takes the lock to leave). */
	r = pthread_create(&s->thread, NULL, session_thread, s);
	if (r) {
		pthread_mutex_unlock(&n->sessions_lock);
		log_warning("closed the connection from %s: cannot start its thread: %s",
			    peer_conn_remote(c), strerror(r));
		peer_conn_free(c);
		free(s);
		return;
	}
	s->next = n->sessions;
	n->sessions = s;
	n->sessions_unauth++;
	pthread_mutex_unlock(&n->sessions_lock);
}

/* The accept loop only accepts: handshakes and hellos run on each
 * session's own thread, under its deadline. */
static void *accept_thread(void *arg)
{
	struct node *n = arg;
	unsigned backoff = 0, dropped = 0;
	uint64_t warned = 0;
	char err[512];

	while (!atomic_load(&n->stopping)) {
		struct peer_conn *c = NULL;
		int r;

		node_sessions_reap(n);
		r = peer_listener_accept(n->listener, 250, err, sizeof(err), &c);
		if (r == -ETIMEDOUT)
			continue;
		if (r == -ECANCELED)
			break;
		if (r < 0) {
			/* Out of descriptors or memory (EMFILE, ENFILE,
			 * ENOBUFS, ENOMEM) or worse: the pending connection
			 * stays queued, so retrying at once would spin. Said
			 * once a burst. */
			if (!backoff)
				log_warning("peer connections not accepted for now: %s",
					    err[0] ? err : strerror(-r));
			backoff = backoff ? MIN(backoff * 2, (unsigned)NODE_ACCEPT_BACKOFF_MAX_MS)
					  : NODE_ACCEPT_BACKOFF_MIN_MS;
			node_accept_pause(n, backoff);
			continue;
		}
		if (backoff) {
			log_info("peer connections accepted again");
			backoff = 0;
		}
		node_session_start(n, c, &warned, &dropped);
	}
	return NULL;
}

void node_sessions_wait(struct node *n)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_nsec += 100 * 1000000;
	if (ts.tv_nsec >= 1000000000) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000;
	}
	pthread_cond_timedwait(&n->sessions_cond, &n->sessions_lock, &ts);
}

/* At stop, once nothing starts sessions any more: wake every session
 * (its connection shut down: its next wait ends) and join them all. */
static void node_sessions_stop(struct node *n)
{
	uint64_t said = clock_usec() + NODE_STOP_WAIT_MS * 1000ull;

	pthread_mutex_lock(&n->sessions_lock);
	for (struct session *s = n->sessions; s; s = s->next)
		if (s->c)
			peer_conn_shutdown(s->c);
	while (n->sessions) {
		node_sessions_wait(n);
		if (n->sessions && said && clock_usec() >= said) {
			/* Still joined: nothing is freed under a session. */
			log_warning("peer sessions still ending after %u ms; waiting for them",
				    (unsigned)NODE_STOP_WAIT_MS);
			said = 0;
		}
	}
	pthread_mutex_unlock(&n->sessions_lock);
	node_sessions_reap(n);
}

/* ---- lifecycle ---- */

/* The cluster's key and the peer transport. */
static int node_transport(struct node *n)
{
	const struct cluster_config *cfg = n->cfg;
	char err[512];
	int r;

	if (cfg->insecure) {
		log_warning("insecure = true in '%s': peer traffic is plaintext (tests and benchmarks only)",
			    cfg->path);
	} else {
		r = secret_load(cfg->secret_file, err, sizeof(err), &n->secret);
		if (r < 0) {
			log_error("%s", err);
			return r;
		}
	}
	r = peer_ctx_new(cfg, n->secret, &n->ctx);
	if (r < 0)
		log_error("cannot set up the peer transport: %s", strerror(-r));
	return r;
}

void node_role_changed(struct node *n)
{
	atomic_fetch_add(&n->role_epoch, 1);
}

/* DRBD's rule: a node whose data is Inconsistent (a resync stopped
 * half-way) or being rewritten (n->writing: a session of the old primary
 * marks it Inconsistent at its first write) is not promoted with that
 * data shown as good. With n->lock held: -EUCLEAN, the reason kept. The
 * lock orders it against session_write_begin(): a session that set
 * n->writing before is seen here, one after sees the new primary in
 * session_write_check() and writes nothing. */
static int node_primary_refuse_locked(struct node *n, const struct meta_info *mi)
{
	if (mi->state != META_STATE_INCONSISTENT && !n->writing) {
		n->promote_refused[0] = 0;
		return 0;
	}
	snprintf(n->promote_refused, sizeof(n->promote_refused),
		 "'%s' refused to act as primary: its volume is %s, its data is not the "
		 "cluster's; it stays a secondary (Inconsistent) until a resync from a node "
		 "with good data completes (with none left: resyncctl --node %s promote --force)",
		 n->self->name,
		 n->writing ? "being rewritten by a resync"
			    : "Inconsistent (a resync stopped half-way)",
		 n->self->name);
	return -EUCLEAN;
}

/* A primary has a generation and is UpToDate by definition. */
int node_primary_init(struct node *n)
{
	struct meta_info mi;
	struct meta_uuid g, own;
	char why[RESYNC_WIRE_TEXT_MAX];
	int r = 0;

	pthread_mutex_lock(&n->lock);
	meta_info_get(node_meta(n), &mi);
	r = node_primary_refuse_locked(n, &mi);
	if (r < 0) {
		snprintf(why, sizeof(why), "%s", n->promote_refused);
		pthread_mutex_unlock(&n->lock);
		log_error("%s", why);
		event_publish_state(n->bus, n->self->name, mi.state, META_STATE_INCONSISTENT, false,
				    why);
		return r;
	}
	/* A primary of a build that kept no record adopts its generation
	 * (its base stays: a fork here would make every secondary's next
	 * resync a full compare). */
	if (n->primary_gen_legacy && !meta_uuid_is_null(&mi.generation)) {
		n->primary_gen = mi.generation;
		n->primary_gen_legacy = false;
		node_state_save_locked(n);
	}
	own = n->primary_gen;
	pthread_mutex_unlock(&n->lock);
	/* Every promotion leaves a fork (issue 11, split brain): a node
	 * that starts as primary under a generation it did not start as
	 * primary itself (one a commit gave it as a secondary, or none)
	 * starts a new one; the old one goes to its history. Its writes
	 * then count under a generation no other node had, which is how
	 * the other side tells it acted as primary (node_split_brain()).
	 * The bitmap counts since the old one (its last commit cleared it):
	 * that is the base, when the bitmap can be trusted. The new
	 * generation is recorded before it is made current, so a crash
	 * between them forks once more at the next start, never less. */
	if (meta_uuid_is_null(&mi.generation) || meta_uuid_is_null(&own) ||
	    memcmp(own.b, mi.generation.b, 16)) {
		r = meta_uuid_random(&g);
		if (r >= 0) {
			pthread_mutex_lock(&n->lock);
			n->primary_gen = g;
			if (!meta_uuid_is_null(&mi.generation) && mi.bitmap_trusted &&
			    mi.state != META_STATE_INCONSISTENT)
				n->base = mi.generation;
			r = node_state_save_locked(n);
			pthread_mutex_unlock(&n->lock);
		}
		if (r >= 0)
			r = meta_generation_set(node_meta(n), &g);
		if (r < 0) {
			log_error("cannot start a generation for '%s': %s", n->self->volume,
				  strerror(-r));
			return r;
		}
		if (!meta_uuid_is_null(&mi.generation)) {
			char a[40], b[40];

			log_info("acting as primary: generation %s follows %s (kept in the history)",
				 meta_uuid_format(&g, a, sizeof(a)),
				 meta_uuid_format(&mi.generation, b, sizeof(b)));
		}
	}
	if (mi.state != META_STATE_UPTODATE) {
		r = meta_state_set(node_meta(n), META_STATE_UPTODATE);
		if (r < 0)
			log_error("cannot mark '%s' UpToDate: %s", n->self->volume, strerror(-r));
	}
	return r;
}

/* One forced promotion at a time (two operators at once): the second
 * finds nothing refused. */
static pthread_mutex_t node_force_lock = PTHREAD_MUTEX_INITIALIZER;

static int node_primary_force_locked(struct node *n, char *why, size_t whylen)
{
	struct meta_info mi;
	bool refused, writing;
	int r;

	pthread_mutex_lock(&n->lock);
	refused = n->promote_refused[0];
	writing = n->writing;
	pthread_mutex_unlock(&n->lock);
	if (!refused) {
		snprintf(why, whylen,
			 atomic_load(&n->is_primary)
				 ? "'%s' acts as primary already: nothing to force"
				 : "refused: '%s' is not a primary that refused its role (the "
				   "configuration or etcd's leader key names the primary): nothing to force",
			 n->self->name);
		return -EINVAL;
	}
	if (writing) {
		snprintf(why, whylen,
			 "refused: a resync is rewriting '%s' now: stop it first (resyncctl cancel "
			 "on the node that runs it)", n->self->name);
		return -EBUSY;
	}
	meta_info_get(node_meta(n), &mi);
	r = meta_trusted_set(node_meta(n), false);
	if (r >= 0)
		r = meta_state_set(node_meta(n), META_STATE_UPTODATE);
	if (r < 0) {
		snprintf(why, whylen, "cannot mark '%s' UpToDate: %s", n->self->volume, strerror(-r));
		return r;
	}
	/* A session that began rewriting meanwhile is seen here (refused
	 * again, and its first write marks the volume Inconsistent anew). */
	r = node_primary_init(n);
	if (r < 0) {
		pthread_mutex_lock(&n->lock);
		snprintf(why, whylen, "%s", r == -EUCLEAN ? n->promote_refused : strerror(-r));
		pthread_mutex_unlock(&n->lock);
		return r;
	}
	atomic_store(&n->is_primary, true);
	node_role_changed(n);
	snprintf(why, whylen,
		 "'%s' acts as primary by force with the data it holds (it was %s): the next "
		 "resync makes every secondary identical to it",
		 n->self->name, meta_state_name(mi.state));
	log_warning("%s", why);
	event_publish_state(n->bus, n->self->name, mi.state, META_STATE_UPTODATE, false, why);
	return 0;
}

int node_primary_force(struct node *n, char *why, size_t whylen)
{
	int r;

	pthread_mutex_lock(&node_force_lock);
	r = node_primary_force_locked(n, why, whylen);
	pthread_mutex_unlock(&node_force_lock);
	return r;
}

/* The volume, opened and locked, served at the mount point (after a
 * dead daemon's stale mount is detached; never on top of a live one). */
static int node_volume_open(struct node *n)
{
	struct fusefs_opts fo = {0};
	int r;

	r = node_mount_unstale(n->self->mount);
	if (r < 0) {
		log_error("cannot detach the stale mount '%s': %s", n->self->mount, strerror(-r));
		return r;
	}
	r = mkdir_p(n->self->mount, 0755);
	if (r < 0) {
		log_error("cannot create '%s': %s", n->self->mount, strerror(-r));
		return r;
	}
	if (fusefs_mountpoint_check(n->self->mount) == -EBUSY) {
		log_error("'%s' is already a mount point (a volume or another file system is "
			  "mounted there): not mounting on top of it",
			  n->self->mount);
		return -EBUSY;
	}
	fo.image = n->self->volume;
	fo.rt_priority = n->cfg->fuse_rt_priority ? (int)n->cfg->fuse_rt_priority : -1;
	fo.on_wait = node_on_wait;
	fo.on_wait_arg = n;
	fo.mountpoint = n->self->mount;
	fo.meta.block_size = n->cfg->block_size;
	r = fusefs_new(&fo, &n->fs);
	if (r == -EBUSY) {
		log_error("'%s' is in use by another writer (resyncfs, resyncd or resync-diff)",
			  n->self->volume);
		return r;
	}
	if (r < 0) {
		log_error("cannot serve '%s' at '%s': %s", n->self->volume, n->self->mount,
			  strerror(-r));
		return r;
	}
	n->vol = fusefs_volume(n->fs);
	n->meta = fusefs_meta(n->fs);
	if (n->is_primary) {
		r = node_primary_init(n);
		if (r == -EUCLEAN)
			n->is_primary = false; /* said: served as a secondary */
		else if (r < 0)
			return r;
	}
	tree_file_load(n);
	/* An interrupted rollback finishes before anyone reads the volume. */
	r = node_undo_load(n);
	if (r < 0)
		return r;
	r = fusefs_start(n->fs);
	if (r < 0)
		log_error("cannot serve '%s': %s", n->self->mount, strerror(-r));
	return r;
}

/* Events before any thread can publish; notifications and metrics
 * follow them (a notifier that cannot start is logged, not fatal). */
static int node_services(struct node *n)
{
	const struct cluster_config *cfg = n->cfg;
	struct notify_opts no = {.cfg = cfg, .node = n->self->name};
	struct metrics_opts mo = {.cfg = cfg, .node = n->self->name, .listen = n->self->metrics};
	const char *retry = getenv("RESYNC_TEST_NOTIFY_RETRY_MS");
	int r;

	r = event_bus_new(cfg->name, &n->bus);
	if (r < 0)
		return r;
	no.bus = mo.bus = n->bus;
	/* Tests only (tests/integration/test-ops.py): every retry after this
	 * many ms, where the default backoff (1 s, doubling) waits seconds. */
	if (retry)
		no.backoff_min_ms = no.backoff_max_ms = (unsigned)strtoul(retry, NULL, 10);
	mo.meta = node_meta(n);
	mo.health = health_http;
	mo.render = health_metrics;
	mo.arg = n;
	if (notify_new(&no, &n->notify) < 0)
		n->notify = NULL;
	if (n->self->metrics) {
		r = metrics_new(&mo, &n->metrics);
		if (r < 0)
			log_error("cannot serve metrics at '%s': %s", n->self->metrics, strerror(-r));
	}
	return r < 0 ? r : 0;
}

/* The dashboard, once the control socket it acts through listens. */
static int node_web_start(struct node *n)
{
	struct web_opts wo = {.cfg = n->cfg, .self = n->self, .vol = n->vol};
	char err[1024];
	int r;

	if (!n->self->web)
		return 0;
	r = web_new(&wo, err, sizeof(err), &n->web);
	if (r < 0) {
		log_error("%s", err);
		return r;
	}
	log_info("dashboard at http://%s/", n->self->web);
	return 0;
}

/* The peer port and its accept loop, then the control socket and the
 * dashboard. */
static int node_listen(struct node *n)
{
	char err[512];
	int r;

	r = peer_listener_new(n->ctx, n->self->host, n->self->port, err, sizeof(err), &n->listener);
	if (r < 0) {
		log_error("%s", err);
		return r;
	}
	r = pthread_create(&n->accept_thread, NULL, accept_thread, n);
	if (r)
		return -r;
	n->accept_started = true;
	if (!n->self->control)
		return node_web_start(n); /* refused when there is a `web` */
	r = control_server_new(n->self->control, n->cfg->name, node_commands, node_commands_n, n,
			       &n->ctl);
	if (r < 0) {
		log_error("cannot listen on '%s': %s", n->self->control, strerror(-r));
		return r;
	}
	return node_web_start(n);
}

int node_new(const struct cluster_config *cfg, const char *name, struct node **ret)
{
	struct node *n;
	int r;

	n = calloc(1, sizeof(*n));
	if (!n)
		return -ENOMEM;
	pthread_mutex_init(&n->lock, NULL);
	pthread_mutex_init(&n->sessions_lock, NULL);
	pthread_mutex_init(&n->proof_lock, NULL);
	pthread_cond_init(&n->sessions_cond, NULL);
	n->cfg = cfg;
	n->proof_last = calloc(cfg->n_nodes ? cfg->n_nodes : 1, sizeof(*n->proof_last));
	if (!n->proof_last) {
		free(n);
		return -ENOMEM;
	}
	n->self = cluster_config_node(cfg, name);
	if (!n->self) {
		log_error("'%s' has no node '%s'", cfg->path, name);
		r = -EINVAL;
		goto fail;
	}
	n->is_primary = cluster_config_primary_is(cfg, name);
	/* etcd (issue 14): the primary from its leader key. */
	r = node_etcd_new(n);
	if (r < 0)
		goto fail;
	if (!n->self->mount) {
		log_error("%s:%u: node '%s' has no 'mount'", cfg->path, n->self->line, name);
		r = -EINVAL;
		goto fail;
	}
	r = node_transport(n);
	if (r < 0)
		goto fail;
	if (asprintf(&n->state_path, "%s.resync-node", n->self->volume) < 0) {
		n->state_path = NULL;
		r = -ENOMEM;
		goto fail;
	}
	r = drift_new(n);
	if (r >= 0)
		r = node_plan_keep_new(n);
	if (r < 0)
		goto fail;
	node_state_load(n);
	r = node_volume_open(n);
	if (r >= 0)
		r = node_services(n);
	if (r >= 0 && n->promote_refused[0]) /* at the volume's opening: no bus yet */
		event_publish_state(n->bus, n->self->name, META_STATE_INCONSISTENT,
				    META_STATE_INCONSISTENT, false, n->promote_refused);
	if (r >= 0)
		r = node_listen(n);
	if (r < 0)
		goto fail;
	drift_start(n);
	node_etcd_start(n);
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
	int r = 0;

	if (!n || n->stopped)
		return 0;
	n->stopped = true;
	atomic_store(&n->stopping, true);
	atomic_store(&n->cancel, true);
	/* Every peer wait ends now (sessions, a resync's jobs, a forwarded
	 * request, the accept loop): nothing waits out a peer's timeout. */
	if (n->ctx)
		peer_ctx_shutdown(n->ctx);
	/* The dashboard first: its control connections close while the
	 * control server still serves them. */
	web_free(n->web);
	n->web = NULL;
	/* The scheduled verify and the watch see the stop flag within a
	 * tick; their peer waits ended above. */
	drift_stop(n);
	/* The control server joins its clients, and with them any resync
	 * they run (its jobs are joined by the resync). */
	control_server_free(n->ctl);
	n->ctl = NULL;
	/* A plan's kept connections, once no run can take them. */
	node_plan_keep_stop(n);
	/* etcd's threads, once no resync holds its lock. */
	node_etcd_stop(n);
	metrics_free(n->metrics);
	n->metrics = NULL;
	if (n->accept_started)
		pthread_join(n->accept_thread, NULL);
	n->accept_started = false;
	node_sessions_stop(n);
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
	/* node_stop() joined every thread that could use what follows. */
	node_stop(n);
	metrics_free(n->metrics);
	notify_free(n->notify);
	event_bus_free(n->bus);
	peer_listener_free(n->listener);
	fusefs_free(n->fs);
	peer_ctx_free(n->ctx);
	secret_free(n->secret);
	free(n->state_path);
	free(n->peer_features);
	undo_free(n->undo);
	free(n->undo_path);
	drift_free(n);
	node_plan_keep_free(n);
	node_etcd_free(n);
	tree_cache_release(&n->tcache);
	pthread_cond_destroy(&n->sessions_cond);
	pthread_mutex_destroy(&n->sessions_lock);
	proof_tree_release(&n->proof);
	free(n->proof_last);
	pthread_mutex_destroy(&n->proof_lock);
	pthread_mutex_destroy(&n->lock);
	free(n);
}
