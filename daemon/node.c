/* A node of the cluster: volume through fusefs, peer sessions, control
 * commands and the resync from the primary (DESIGN.md, "A resync, from the
 * primary").
 *
 * The session protocol on one peer connection (the connecting side is the
 * one asking; the accepting side serves its own volume):
 *   -> HELLO            <- HELLO_ACK | REFUSE (reason; both sides log it)
 *   -> HASH_REQ ...     <- HASH_REPLY ...   (hash-tree walk, seed per resync)
 *   -> BLOCKS ...                           (primary only: fence, Inconsistent,
 *                                            write, invalidate the FUSE cache)
 *   -> EXTENTS ...                          (the same, several page runs a frame,
 *                                            when both speak WIRE_FEATURE_EXTENTS)
 *   -> CHECKPOINT off   <- ACK off          (durable below off, recorded)
 *   -> COMMIT gen       <- ACK size | ERROR (take gen, clear bitmap, UpToDate)
 *   -> ERROR            (cancelled: the accepting side thaws, stays Inconsistent)
 *   -> STATUS_REQ       <- STATUS           (dirty bytes, last resync, checkpoint)
 *   -> BITMAP_REQ off   <- BITMAP ...       (the dirty bitmap, for a quick resync)
 *
 * Generations (DRBD's UUIDs): a secondary's commit gives it the primary's
 * current generation and clears its bitmap. When every secondary has every
 * block, the primary clears its own bitmap, records the generation they
 * now share as the bitmap's base and starts a new generation. A secondary
 * whose generation is the primary's current one or that base, with both
 * bitmaps trusted, needs only the union of both bitmaps (quick resync);
 * anything else is compared through the hash tree. A checkpoint is
 * recorded under the primary's generation of its resync, so a restarted
 * resync knows how far the last one of the same generation got. */
#include <errno.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/vfs.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <spawn.h>
#include <fcntl.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "control.h"
#include "events.h"
#include "log.h"
#include "metrics.h"
#include "node.h"
#include "notify.h"
#include "ratectl.h"
#include "peer.h"
#include "resync/blockcmp.h"
#include "resync/fusefs.h"
#include "resync/hash.h"
#include "resync/hashtree.h"
#include "resync/io.h"
#include "resync/limits.h"
#include "resync/macro.h"
#include "resync/meta.h"
#include "resync/patch.h"
#include "resync/range.h"
#include "resync/volume.h"
#include "wire.h"

enum {
	NODE_SESSION_TIMEOUT_MS = 120000, /* between two frames of a session */
	NODE_ERROR_LINGER_MS = 2000,	  /* after a session's ERROR, for the peer to close */
	NODE_STOP_WAIT_MS = 5000,	  /* sessions given to end at stop */
	NODE_CHECKPOINT_BYTES = 16 << 20, /* a checkpoint every this many bytes sent */
	NODE_PROGRESS_USEC = 500000,
};

/* What identifies an image's content without reading it: any write
 * moves mtime and ctime (ctime cannot be set back by anyone), a
 * replaced file has another inode. */
struct image_id {
	uint64_t dev, ino, size;
	struct timespec mtime, ctime;
};

/* A volume's leaf hashes and hash tree for one seed, with the image's
 * identity when hashing started. Reused only while the identity is the
 * same and the mtime was already older than the start of the hashing by
 * more than the clock's coarse tick (so any later write moves it): the
 * plan's compare serves the resync that follows it, and a volume that
 * did not change since its last compare (across clean restarts too, see
 * tree_file_save()) is not read again. Regular files only (a block device
 * has no useful times). */
struct tree_cache {
	struct hash128 *hashes;
	struct hashtree *tree;
	uint64_t seed;
	unsigned fanout;
	uint32_t leaf; /* bytes a leaf covers */
	struct image_id id;
	uint64_t built; /* now_usec() when hashing started; 0: empty */
};

enum {
	/* Hash-tree fanout over page leaves (blocks: the default). */
	NODE_FINE_FANOUT = 16,
	TREE_CACHE_MARGIN_NSEC = 200 * 1000000, /* above any coarse clock tick */
};

static void tree_cache_release(struct tree_cache *c)
{
	hashtree_free(c->tree);
	free(c->hashes);
	memset(c, 0, sizeof(*c));
}

struct node {
	const struct cluster_config *cfg;
	const struct node_config *self;
	bool is_primary;
	struct secret *secret;
	struct peer_ctx *ctx;
	struct peer_listener *listener;
	struct fusefs *fs;
	struct control_server *ctl;
	pthread_t accept_thread;
	bool accept_started;
	bool stopped;
	atomic_bool stopping;
	atomic_bool cancel;
	atomic_int sessions;

	pthread_mutex_t lock;
	bool resync_running; /* protected by lock */
	bool writing;	     /* a session rewrites this volume; protected by lock */
	int64_t last_resync; /* unix seconds, 0 never; protected by lock */
	/* Primary: the generation every secondary shared when the bitmap
	 * was last cleared (null: none recorded); protected by lock. */
	struct meta_uuid base;
	char *state_path; /* IMAGE.resync-node: last_resync and base */
	/* Events, notifications, metrics, live pace (events.h, notify.h,
	 * metrics.h, ratectl.h). */
	struct event_bus *bus;
	struct notify *notify;
	struct metrics *metrics;
	struct ratectl rate;
	/* The last hash tree built of this volume (a resync's plan and the
	 * resync itself use one seed): valid while the image is unchanged;
	 * protected by lock, handed over whole (see tree_cache_take()). */
	struct tree_cache tcache;
};

static void logf_(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void logf_(const char *fmt, ...)
{
	va_list ap;

	char line[2048];

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	/* The priority follows the wording: failures are errors, refusals
	 * and stale state warnings, the rest information. */
	log_printf(strstr(line, "cannot ") || strstr(line, "failed") ? LOG_ERR
		   : strstr(line, "refused") || strstr(line, "stale") || strstr(line, "stopped") ||
				   strstr(line, "insecure") || strstr(line, "did not")
			   ? LOG_WARNING
			   : LOG_INFO,
		   "%s", line);
}

static uint64_t now_usec(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

static int mkdir_p(const char *path)
{
	_cleanup_free_ char *p = strdup(path);

	if (!p)
		return -ENOMEM;
	for (char *s = p + 1; *s; s++) {
		if (*s != '/')
			continue;
		*s = 0;
		if (mkdir(p, 0755) < 0 && errno != EEXIST)
			return -errno;
		*s = '/';
	}
	if (mkdir(p, 0755) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

static uint64_t node_size(struct node *n)
{
	return volume_size(fusefs_volume(n->fs));
}

static struct meta *node_meta(struct node *n)
{
	return fusefs_meta(n->fs);
}

static int node_image_id(struct node *n, struct image_id *ret)
{
	struct stat st;

	memset(ret, 0, sizeof(*ret));
	if (fstat(volume_fd(fusefs_volume(n->fs)), &st) < 0)
		return -errno;
	if (!S_ISREG(st.st_mode))
		return -ENOTSUP;
	*ret = (struct image_id){(uint64_t)st.st_dev, (uint64_t)st.st_ino, (uint64_t)st.st_size,
				 st.st_mtim, st.st_ctim};
	return 0;
}

static bool image_id_equal(const struct image_id *a, const struct image_id *b)
{
	return a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
	       a->mtime.tv_sec == b->mtime.tv_sec && a->mtime.tv_nsec == b->mtime.tv_nsec &&
	       a->ctime.tv_sec == b->ctime.tv_sec && a->ctime.tv_nsec == b->ctime.tv_nsec;
}

/* Whether the image's mtime is older than now by more than the margin, so
 * that a write from now on changes it; *ret is set either way. */
static bool node_image_still(struct node *n, struct image_id *ret)
{
	struct timespec now;
	int64_t age;

	if (node_image_id(n, ret) < 0)
		return false;
	clock_gettime(CLOCK_REALTIME, &now);
	age = (int64_t)(now.tv_sec - ret->mtime.tv_sec) * 1000000000 +
	      (now.tv_nsec - ret->mtime.tv_nsec);
	return age > TREE_CACHE_MARGIN_NSEC;
}

/* Take the cached tree for fanout, leaf size and seed (0: any seed) when the image
 * is unchanged since it was hashed: moves it to *ret, the cache is left
 * empty. */
static bool tree_cache_take(struct node *n, uint64_t seed, unsigned fanout, uint32_t leaf,
			    struct tree_cache *ret)
{
	struct tree_cache *c = &n->tcache;
	struct image_id now;
	bool ok = false;

	pthread_mutex_lock(&n->lock);
	if (c->built && c->fanout == fanout && c->leaf == leaf && (!seed || c->seed == seed) &&
	    node_image_id(n, &now) == 0 && image_id_equal(&now, &c->id)) {
		*ret = *c;
		memset(c, 0, sizeof(*c));
		ok = true;
	}
	pthread_mutex_unlock(&n->lock);
	return ok;
}

/* Give a tree to the cache (replacing the one there); *c is left empty. */
static void tree_cache_put(struct node *n, struct tree_cache *c)
{
	pthread_mutex_lock(&n->lock);
	tree_cache_release(&n->tcache);
	n->tcache = *c;
	pthread_mutex_unlock(&n->lock);
	memset(c, 0, sizeof(*c));
}

/* ---- the node's state file (IMAGE.resync-node, JSON) ----
 * What the metadata does not hold: the last completed resync and the
 * primary's bitmap base. Replaced atomically (new file, fsync, rename). */

static void node_state_load(struct node *n)
{
	json_object *o = json_object_from_file(n->state_path), *v;

	if (!o)
		return;
	if (json_object_object_get_ex(o, "last_resync", &v))
		n->last_resync = json_object_get_int64(v);
	if (json_object_object_get_ex(o, "base", &v) && json_object_get_string(v))
		meta_uuid_parse(json_object_get_string(v), &n->base);
	json_object_put(o);
}

/* Called with n->lock held. */
static int node_state_save_locked(struct node *n)
{
	json_object *o = json_object_new_object();
	_cleanup_free_ char *tmp = NULL;
	_cleanup_close_ int fd = -1;
	const char *text;
	char u[40];
	size_t len, done = 0;
	int r = 0;

	json_object_object_add(o, "last_resync", json_object_new_int64(n->last_resync));
	json_object_object_add(o, "base", meta_uuid_is_null(&n->base) ? NULL :
				   json_object_new_string(meta_uuid_format(&n->base, u, sizeof(u))));
	text = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);
	len = strlen(text);
	if (asprintf(&tmp, "%s.tmp", n->state_path) < 0) {
		tmp = NULL;
		r = -ENOMEM;
		goto out;
	}
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0) {
		r = -errno;
		goto out;
	}
	while (done < len) {
		ssize_t k = write(fd, text + done, len - done);

		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0) {
			r = -errno;
			goto out;
		}
		done += (size_t)k;
	}
	if (fsync(fd) < 0 || rename(tmp, n->state_path) < 0)
		r = -errno;
out:
	if (r < 0)
		logf_("cannot write '%s': %s", n->state_path, strerror(-r));
	json_object_put(o);
	return r;
}

static void node_last_resync_set(struct node *n)
{
	pthread_mutex_lock(&n->lock);
	n->last_resync = time(NULL);
	node_state_save_locked(n);
	pthread_mutex_unlock(&n->lock);
}

/* A FUSE mount left behind by a daemon that was killed answers ENOTCONN
 * (statfs always reaches the file system; stat may be answered from the
 * kernel's cache): detach it, so that the volume is not mounted on top of
 * a dead one. */
static int node_mount_unstale(const char *mount)
{
	const char *argv[] = {"fusermount3", "-u", "-z", mount, NULL};
	struct statfs sf;
	pid_t pid;
	int status, r;

	if (statfs(mount, &sf) == 0 || errno != ENOTCONN)
		return 0;
	logf_("'%s' is a stale mount (its daemon died): detaching it", mount);
	if (geteuid() == 0)
		return umount2(mount, MNT_DETACH) == 0 ? 0 : -errno;
	r = posix_spawnp(&pid, argv[0], NULL, NULL, (char *const *)argv, environ);
	if (r)
		return -r;
	if (waitpid(pid, &status, 0) < 0)
		return -errno;
	return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -EIO;
}

/* ---- hello ---- */

/* The features this node offers: all it speaks, less those named in
 * RESYNC_FEATURES_OFF (a number: a mask of enum wire_features), so that
 * tests can make a peer of an older build. */
static uint64_t node_features(void)
{
	const char *off = getenv("RESYNC_FEATURES_OFF");
	uint64_t f = WIRE_FEATURE_ZSTD | WIRE_FEATURE_HASHTREE | WIRE_FEATURE_PAGES |
		     WIRE_FEATURE_EXTENTS | WIRE_FEATURE_FINE_LEAVES | WIRE_FEATURE_CONTROL;

	if (off && *off)
		f &= ~strtoull(off, NULL, 0);
	return f;
}

static void node_hello_make(struct node *n, struct wire_hello *h)
{
	struct meta_info mi;

	memset(h, 0, sizeof(*h));
	meta_info_get(node_meta(n), &mi);
	snprintf(h->cluster, sizeof(h->cluster), "%s", n->cfg->name);
	snprintf(h->node, sizeof(h->node), "%s", n->self->name);
	h->proto_min = WIRE_PROTO_MIN;
	h->proto_max = WIRE_PROTO_MAX;
	h->features = node_features();
	h->volume_size = node_size(n);
	h->block_size = n->cfg->block_size;
	h->state = (uint32_t)mi.state < WIRE_STATE_COUNT ? (uint32_t)mi.state : WIRE_STATE_UNKNOWN;
	h->flags = (mi.bitmap_trusted ? WIRE_HELLO_BITMAP_TRUSTED : 0) |
		   (n->is_primary ? WIRE_HELLO_PRIMARY : 0);
	memcpy(h->generation.b, mi.generation.b, 16);
	h->n_history = MIN(mi.history_n, (unsigned)RESYNC_WIRE_HISTORY_MAX);
	for (unsigned i = 0; i < h->n_history; i++)
		memcpy(h->history[i].b, mi.history[i].b, 16);
}

/* Whether a peer's hello fits this node. Fills why on refusal. */
static int node_hello_check(struct node *n, const struct wire_hello *h, struct wire_text *why)
{
	uint16_t proto;

	memset(why, 0, sizeof(*why));
	if (strcmp(h->cluster, n->cfg->name)) {
		why->code = WIRE_REASON_CLUSTER;
		snprintf(why->text, sizeof(why->text), "cluster '%s' is not this node's cluster '%s'",
			 h->cluster, n->cfg->name);
		return -EPERM;
	}
	if (!cluster_config_node(n->cfg, h->node) || !strcmp(h->node, n->self->name)) {
		why->code = WIRE_REASON_NODE;
		snprintf(why->text, sizeof(why->text), "node '%s' is not another node of cluster '%s'",
			 h->node, n->cfg->name);
		return -EPERM;
	}
	if (wire_proto_negotiate(h->proto_min, h->proto_max, WIRE_PROTO_MIN, WIRE_PROTO_MAX,
				 &proto) < 0) {
		why->code = WIRE_REASON_PROTOCOL;
		snprintf(why->text, sizeof(why->text),
			 "no common protocol: '%s' speaks %u to %u, '%s' speaks %u to %u", h->node,
			 h->proto_min, h->proto_max, n->self->name, WIRE_PROTO_MIN, WIRE_PROTO_MAX);
		return -EPROTONOSUPPORT;
	}
	if (h->block_size != n->cfg->block_size) {
		why->code = WIRE_REASON_BLOCK_SIZE;
		snprintf(why->text, sizeof(why->text),
			 "block sizes differ: '%s' uses %u, '%s' uses %u", h->node, h->block_size,
			 n->self->name, n->cfg->block_size);
		return -EINVAL;
	}
	if (h->volume_size != node_size(n)) {
		why->code = WIRE_REASON_VOLUME_SIZE;
		snprintf(why->text, sizeof(why->text),
			 "volume sizes differ: '%s' has %llu bytes, '%s' has %llu bytes%s", h->node,
			 (unsigned long long)h->volume_size, n->self->name,
			 (unsigned long long)node_size(n),
			 !n->is_primary && h->volume_size > node_size(n) &&
				 !volume_is_blockdev(fusefs_volume(n->fs))
			     ? " (a file: a resync grows it to the primary's size)"
			     : "");
		return -EINVAL;
	}
	return 0;
}

/* After node_hello_check() refused a hello for the volume size alone: a
 * secondary whose volume is a file smaller than its primary's grows it
 * to the primary's size when the primary opens a session that may
 * rewrite it (WIRE_FEATURE_GROW in its hello; a plan or a verify changes
 * nothing): the new bytes read as zeros until the resync fills them, and
 * the metadata starts over, untrusted, so that resync is a full compare.
 * Returns whether it grew; a block device, a larger volume, or a hello
 * from anyone but the cluster's primary stays refused with both sizes. */
static bool node_grow_to_primary(struct node *n, const struct wire_hello *h)
{
	uint64_t was = node_size(n);
	int r;

	if (n->is_primary || !n->cfg->primary || !(h->flags & WIRE_HELLO_PRIMARY) ||
	    !(h->features & WIRE_FEATURE_GROW) || strcmp(h->node, n->cfg->primary) ||
	    h->volume_size <= was || volume_is_blockdev(fusefs_volume(n->fs)))
		return false;
	pthread_mutex_lock(&n->lock);
	if (n->writing || n->resync_running) {
		pthread_mutex_unlock(&n->lock);
		return false;
	}
	n->writing = true; /* no resync writes this volume meanwhile */
	pthread_mutex_unlock(&n->lock);
	r = fusefs_grow(n->fs, h->volume_size);
	if (r >= 0)
		r = meta_state_set(node_meta(n), META_STATE_OUTDATED);
	pthread_mutex_lock(&n->lock);
	n->writing = false;
	pthread_mutex_unlock(&n->lock);
	if (r < 0) {
		logf_("cannot grow '%s' from %llu to %llu bytes (the primary's size): %s",
		      n->self->volume, (unsigned long long)was,
		      (unsigned long long)h->volume_size, strerror(-r));
		return false;
	}
	logf_("grew '%s' from %llu to %llu bytes, the size of the primary '%s'; its metadata "
	      "starts over (the next resync compares everything)",
	      n->self->volume, (unsigned long long)was, (unsigned long long)h->volume_size,
	      h->node);
	event_publish_state(n->bus, n->self->name, NULL, "Outdated", true,
			    "volume grown to the primary's size");
	return true;
}

static int send_text(struct peer_conn *c, uint16_t type, uint32_t code, const char *text)
{
	struct wire_text t = {.code = code};
	unsigned char buf[RESYNC_WIRE_TEXT_MAX + 64];
	size_t len;

	snprintf(t.text, sizeof(t.text), "%s", text);
	if (wire_text_encode(&t, buf, sizeof(buf), &len) < 0)
		return -EINVAL;
	return peer_conn_send_frame(c, type, buf, len);
}

/* ---- the tree cache across clean restarts (IMAGE.resync-hashes) ----
 * A clean stop leaves the cached tree's leaf hashes beside the image,
 * with the image's identity from when they were computed (device, inode,
 * size, mtime, ctime); the next start takes them back only when that
 * identity is exactly the image's, and removes the file either way. Any
 * write to the image, through the mount or not, moves its ctime, which
 * nobody can set back: a volume unchanged since its last compare is not
 * read again by the next one. The file is this machine's (host byte
 * order), checked whole by a hash. */
#define TREE_FILE_MAGIC "RSYNHSH1"

struct tree_file_hdr {
	char magic[8];
	uint64_t seed, nleaves;
	uint32_t fanout, leaf;
	struct image_id id;
	struct hash128 check; /* hash_block() of the leaf hashes, seed 0 */
};

static char *tree_file_path(const struct node *n)
{
	char *p;

	return asprintf(&p, "%s.resync-hashes", n->self->volume) < 0 ? NULL : p;
}

static void tree_file_save(struct node *n)
{
	_cleanup_free_ char *path = tree_file_path(n), *tmp = NULL;
	_cleanup_close_ int fd = -1;
	struct tree_cache *c = &n->tcache;
	struct tree_file_hdr h;
	struct image_id now;
	int r;

	if (!path || !c->built || node_image_id(n, &now) < 0 || !image_id_equal(&now, &c->id))
		return;
	memset(&h, 0, sizeof(h));
	memcpy(h.magic, TREE_FILE_MAGIC, sizeof(h.magic));
	h.seed = c->seed;
	h.nleaves = DIV_ROUND_UP(c->id.size, c->leaf);
	h.fanout = c->fanout;
	h.leaf = c->leaf;
	h.id = c->id;
	h.check = hash_block(c->hashes, h.nleaves * sizeof(*c->hashes), 0);
	if (asprintf(&tmp, "%s.tmp", path) < 0)
		return;
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	r = fd < 0 ? -errno : fd_pwrite_full(fd, &h, sizeof(h), 0);
	if (r >= 0)
		r = fd_pwrite_full(fd, c->hashes, h.nleaves * sizeof(*c->hashes), sizeof(h));
	if (r >= 0 && fsync(fd) < 0)
		r = -errno;
	if (r >= 0 && rename(tmp, path) < 0)
		r = -errno;
	if (r < 0) {
		unlink(tmp);
		logf_("cannot keep the hash tree of '%s' for the next start: %s", n->self->volume,
		      strerror(-r));
	}
}

static void tree_file_load(struct node *n)
{
	_cleanup_free_ char *path = tree_file_path(n);
	_cleanup_free_ struct hash128 *hashes = NULL;
	_cleanup_close_ int fd = -1;
	struct hashtree *tree = NULL;
	struct tree_file_hdr h;
	struct image_id now;
	struct stat st;

	if (!path || (fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
		return;
	unlink(path); /* taken back once, or not at all */
	if (fstat(fd, &st) < 0 || fd_pread_full(fd, &h, sizeof(h), 0) < 0 ||
	    memcmp(h.magic, TREE_FILE_MAGIC, sizeof(h.magic)) || node_image_id(n, &now) < 0 ||
	    !image_id_equal(&now, &h.id) || !resync_block_size_valid(h.leaf) ||
	    h.fanout < RESYNC_HASHTREE_FANOUT_MIN || h.fanout > RESYNC_HASHTREE_FANOUT_MAX ||
	    h.nleaves != DIV_ROUND_UP(now.size, h.leaf) ||
	    (uint64_t)st.st_size != sizeof(h) + h.nleaves * sizeof(*hashes))
		return;
	hashes = malloc(h.nleaves ? h.nleaves * sizeof(*hashes) : 1);
	if (!hashes || fd_pread_full(fd, hashes, h.nleaves * sizeof(*hashes), sizeof(h)) < 0)
		return;
	{
		struct hash128 check = hash_block(hashes, h.nleaves * sizeof(*hashes), 0);

		if (!hash128_equal(&check, &h.check))
			return;
	}
	if (hashtree_new(hashes, h.nleaves, h.fanout, h.seed, &tree) < 0)
		return;
	tree_cache_release(&n->tcache);
	n->tcache = (struct tree_cache){TAKE_PTR(hashes), tree, h.seed, h.fanout, h.leaf, h.id,
					now_usec()};
	logf_("took back the hash tree of '%s': the image is unchanged since its last compare",
	      n->self->volume);
}

/* ---- serving a peer (the accepting side) ---- */

/* Writeback started early: the pages a resync writes are scattered, and
 * writing them out takes longer than receiving them. A thread of the
 * session starts the writeback of each frame's span (sync_file_range,
 * which waits for the device's queue) while the session receives the
 * next frames; a checkpoint's or the commit's fdatasync then waits for
 * less. Spans that find the queue full are left to that fdatasync. */
enum { WRITEBACK_QUEUE = 64 };

struct writeback {
	pthread_t t;
	bool started, stop;
	int fd;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct {
		uint64_t off, len;
	} q[WRITEBACK_QUEUE];
	unsigned head, n;
};

static void *writeback_thread(void *arg)
{
	struct writeback *w = arg;

	pthread_mutex_lock(&w->lock);
	for (;;) {
		uint64_t off, len;

		while (!w->n && !w->stop)
			pthread_cond_wait(&w->cond, &w->lock);
		if (!w->n)
			break;
		off = w->q[w->head].off;
		len = w->q[w->head].len;
		w->head = (w->head + 1) % WRITEBACK_QUEUE;
		w->n--;
		pthread_mutex_unlock(&w->lock);
		/* Advice only: an error shows at the fdatasync that follows. */
		(void)sync_file_range(w->fd, (off64_t)off, (off64_t)len, SYNC_FILE_RANGE_WRITE);
		pthread_mutex_lock(&w->lock);
	}
	pthread_mutex_unlock(&w->lock);
	return NULL;
}

static void writeback_start(struct writeback *w, int fd)
{
	memset(w, 0, sizeof(*w));
	w->fd = fd;
	pthread_mutex_init(&w->lock, NULL);
	pthread_cond_init(&w->cond, NULL);
	w->started = !pthread_create(&w->t, NULL, writeback_thread, w);
}

static void writeback_push(struct writeback *w, uint64_t off, uint64_t len)
{
	if (!w->started)
		return;
	pthread_mutex_lock(&w->lock);
	if (w->n < WRITEBACK_QUEUE) {
		w->q[(w->head + w->n) % WRITEBACK_QUEUE].off = off;
		w->q[(w->head + w->n) % WRITEBACK_QUEUE].len = len;
		w->n++;
		pthread_cond_signal(&w->cond);
	}
	pthread_mutex_unlock(&w->lock);
}

/* Stop the thread once the spans queued were started. */
static void writeback_stop(struct writeback *w)
{
	if (!w->started)
		return;
	pthread_mutex_lock(&w->lock);
	w->stop = true;
	pthread_cond_signal(&w->cond);
	pthread_mutex_unlock(&w->lock);
	pthread_join(w->t, NULL);
	pthread_mutex_destroy(&w->lock);
	pthread_cond_destroy(&w->cond);
	w->started = false;
}

struct session {
	struct node *n;
	struct peer_conn *c;
	unsigned char *in, *out;
	struct hash128 *hashes; /* this volume's block hashes for seed */
	struct hashtree *tree;
	uint64_t seed;
	unsigned fanout;
	uint32_t leaf;
	struct image_id id; /* the image's, when hashing started */
	uint64_t built;	       /* then; 0: the tree may not be cached */
	bool writing;
	bool wrote;
	struct patch_writer *pw;
	struct writeback wb;
	uint64_t n_blocks, n_extents; /* BLOCKS and EXTENTS frames written */
	struct wire_zstd *z;
	unsigned char *raw;
	unsigned char *bitmap; /* snapshot for BITMAP_REQ */
	size_t bitmap_size;
	struct meta_uuid target; /* the primary's generation (from its hello) */
	char peer[RESYNC_NAME_MAX + 1];
};

static void session_on_written(void *arg, uint64_t off, uint64_t len)
{
	struct session *s = arg;

	fusefs_invalidate(s->n->fs, off, len);
}

static int session_tree(struct session *s, uint64_t seed, unsigned fanout, uint32_t leaf)
{
	struct node *n = s->n;
	uint64_t size = node_size(n);
	struct blockcmp_opts o = {.block_size = leaf, .seed = seed};
	uint64_t nb = DIV_ROUND_UP(size, leaf);
	struct tree_cache c;
	int r;

	if (s->tree && s->seed == seed && s->fanout == fanout && s->leaf == leaf)
		return 0;
	hashtree_free(s->tree);
	s->tree = NULL;
	free(s->hashes);
	s->hashes = NULL;
	if (tree_cache_take(n, seed, fanout, leaf, &c)) {
		/* The plan's compare, a moment ago, of this same image. */
		s->hashes = c.hashes;
		s->tree = c.tree;
		s->seed = seed;
		s->fanout = fanout;
		s->leaf = leaf;
		s->id = c.id;
		s->built = c.built;
		return 0;
	}
	s->built = node_image_still(n, &s->id) ? now_usec() : 0;
	s->hashes = calloc(nb ? nb : 1, sizeof(*s->hashes));
	if (!s->hashes)
		return -ENOMEM;
	if (size) {
		r = blockcmp_hash_volume(fusefs_volume(n->fs), 0, size, &o, s->hashes);
		if (r < 0)
			return r;
	}
	r = hashtree_new(s->hashes, nb, fanout, seed, &s->tree);
	if (r < 0)
		return r;
	s->seed = seed;
	s->fanout = fanout;
	s->leaf = leaf;
	return 0;
}

static int session_hash_req(struct session *s, size_t len)
{
	struct node *n = s->n;
	struct wire_hash_req q;
	_cleanup_free_ struct hashtree_range *ranges = NULL;
	_cleanup_free_ struct hash128 *h = NULL;
	size_t nh, olen;
	uint32_t leaf;
	int r;

	r = wire_hash_req_decode(s->in, len, &q);
	if (r < 0)
		return r;
	/* Leaves finer than the primary would pick are refused: their
	 * number (and the tree's memory) is bounded. */
	leaf = q.leaf_size ? q.leaf_size : n->cfg->block_size;
	if (leaf < wire_tree_leaf(node_size(n), n->cfg->block_size))
		return -EBADMSG;
	r = session_tree(s, q.seed, q.fanout, leaf);
	if (r < 0)
		return r;
	ranges = calloc(q.n_ranges, sizeof(*ranges));
	h = calloc(q.n_hashes ? q.n_hashes : 1, sizeof(*h));
	if (!ranges || !h)
		return -ENOMEM;
	for (size_t i = 0; i < q.n_ranges; i++)
		ranges[i] = wire_hash_req_range(&q, i);
	r = hashtree_get(s->tree, q.level, ranges, q.n_ranges, h, q.n_hashes, &nh);
	if (r < 0)
		return r;
	r = wire_hash_reply_encode(q.level, h, nh, s->out, RESYNC_WIRE_FRAME_MAX, &olen);
	if (r < 0)
		return r;
	return peer_conn_send_frame(s->c, WIRE_HASH_REPLY, s->out, olen);
}

/* PAGE_REQ: the hashes of the pages of byte ranges of this volume, read
 * now (the primary asks for the pages of the blocks it found differing,
 * and sends only the pages whose hashes differ). */
static int session_page_req(struct session *s, size_t len)
{
	struct node *n = s->n;
	struct wire_page_req q;
	uint64_t size = node_size(n);
	int fd = volume_fd(fusefs_volume(n->fs));
	_cleanup_free_ struct hash128 *h = NULL;
	_cleanup_free_ unsigned char *buf = NULL;
	size_t k = 0, olen;
	int r;

	r = wire_page_req_decode(s->in, len, &q);
	if (r < 0)
		return r;
	h = calloc(q.n_pages ? q.n_pages : 1, sizeof(*h));
	/* RESYNC_CHUNK is a multiple of every valid page size. */
	buf = malloc(RESYNC_CHUNK);
	if (!h || !buf)
		return -ENOMEM;
	for (uint32_t i = 0; i < q.n_ranges; i++) {
		struct hashtree_range rr = wire_page_req_range(&q, i);
		uint64_t off = rr.first, end;

		if (rr.first >= size || rr.count > size - rr.first)
			return -EBADMSG;
		end = rr.first + rr.count;
		if (rr.count % q.page_size && end != size)
			return -EBADMSG;
		while (off < end) {
			size_t m = (size_t)MIN(end - off, (uint64_t)RESYNC_CHUNK);

			r = fd_pread_full(fd, buf, m, off);
			if (r < 0)
				return r;
			for (size_t p = 0; p < m; p += q.page_size) {
				if (k >= q.n_pages)
					return -EBADMSG; /* our bug: decode counted them */
				h[k++] = hash_block(buf + p, MIN((size_t)q.page_size, m - p), q.seed);
			}
			off += m;
		}
	}
	if (k != q.n_pages)
		return -EBADMSG;
	r = wire_hash_reply_encode(0, h, k, s->out, RESYNC_WIRE_FRAME_MAX, &olen);
	if (r < 0)
		return r;
	return peer_conn_send_frame(s->c, WIRE_PAGE_REPLY, s->out, olen);
}

/* Before the first write: fence the mount, mark the volume Inconsistent. */
static int session_write_begin(struct session *s)
{
	struct node *n = s->n;
	struct patch_opts po = {.on_written = session_on_written, .arg = s};
	enum io_kind wk = io_kind_resolve(IO_KIND_AUTO);
	int r;

	/* Plain pwrite unless io_uring is asked for: the pages of a resync
	 * are scattered, and a buffered io_uring write at depth 1 goes
	 * through a kernel worker (a context switch each), as in blockcmp. */
	po.io = wk == IO_KIND_AUTO ? IO_KIND_SYNC : wk;

	pthread_mutex_lock(&n->lock);
	if (n->writing) {
		pthread_mutex_unlock(&n->lock);
		return -EBUSY;
	}
	n->writing = true;
	pthread_mutex_unlock(&n->lock);
	s->writing = true;
	s->wrote = true;
	r = fusefs_fence_freeze(n->fs, FUSEFS_FENCE_WAIT);
	if (r < 0)
		return r;
	r = meta_state_set(node_meta(n), META_STATE_INCONSISTENT);
	if (r < 0)
		return r;
	event_publish_state(n->bus, n->self->name, NULL, "Inconsistent", true, "resync in progress");
	r = patch_writer_new(fusefs_volume(n->fs), &po, &s->pw);
	if (r < 0)
		return r;
	writeback_start(&s->wb, volume_fd(fusefs_volume(n->fs)));
	r = wire_zstd_new(0, &s->z);
	if (r < 0)
		return r;
	s->raw = malloc(RESYNC_WIRE_BLOCKS_MAX);
	if (!s->raw)
		return -ENOMEM;
	logf_("'%s' is rewriting this volume: writes fenced, state Inconsistent", s->peer);
	return 0;
}

static void session_write_end(struct session *s)
{
	struct node *n = s->n;

	if (!s->writing)
		return;
	writeback_stop(&s->wb);
	if (s->pw)
		patch_writer_sync(s->pw);
	patch_writer_free(s->pw);
	s->pw = NULL;
	wire_zstd_free(s->z);
	s->z = NULL;
	free(s->raw);
	s->raw = NULL;
	if (fusefs_fence_frozen(n->fs))
		fusefs_fence_thaw(n->fs);
	pthread_mutex_lock(&n->lock);
	n->writing = false;
	pthread_mutex_unlock(&n->lock);
	s->writing = false;
}

/* Start writing (fence, Inconsistent on disk) at the first data frame. */
static int session_write_ensure(struct session *s)
{
	return s->writing ? 0 : session_write_begin(s);
}

static int session_blocks(struct session *s, size_t len)
{
	struct wire_blocks b;
	int r;

	r = session_write_ensure(s);
	if (r < 0)
		return r;
	r = wire_blocks_decode(s->in, len, &b);
	if (r < 0)
		return r;
	r = wire_blocks_unpack(s->z, &b, s->raw, RESYNC_WIRE_BLOCKS_MAX);
	if (r < 0)
		return r;
	s->n_blocks++;
	r = patch_writer_put(s->pw, b.offset, s->raw, b.raw_len);
	if (r >= 0)
		r = patch_writer_flush(s->pw);
	if (r >= 0)
		writeback_push(&s->wb, b.offset, b.raw_len);
	return r;
}

/* EXTENTS: unpacked once, each run written (and its FUSE pages
 * invalidated by on_written) in turn. */
static int session_extents(struct session *s, size_t len)
{
	struct wire_extents m;
	size_t pos = 0;
	int r;

	r = session_write_ensure(s);
	if (r < 0)
		return r;
	r = wire_extents_decode(s->in, len, &m);
	if (r < 0)
		return r;
	r = wire_extents_unpack(s->z, &m, s->raw, RESYNC_WIRE_BLOCKS_MAX);
	if (r < 0)
		return r;
	s->n_extents++;
	for (uint32_t i = 0; i < m.n_extents; i++) {
		struct wire_extent e = wire_extents_get(&m, i);

		/* decode checked that the lengths sum to raw_len */
		r = patch_writer_put(s->pw, e.offset, s->raw + pos, e.len);
		if (r < 0)
			return r;
		pos += e.len;
	}
	if (m.n_extents) {
		struct wire_extent a = wire_extents_get(&m, 0), b = wire_extents_get(&m, m.n_extents - 1);

		r = patch_writer_flush(s->pw);
		if (r < 0)
			return r;
		writeback_push(&s->wb, a.offset, b.offset + b.len - a.offset);
	}
	return 0;
}

static int send_offset(struct peer_conn *c, uint16_t type, uint64_t off)
{
	unsigned char buf[64];
	size_t len;
	int r;

	r = wire_offset_encode(off, buf, sizeof(buf), &len);
	if (r < 0)
		return r;
	return peer_conn_send_frame(c, type, buf, len);
}

static int session_checkpoint(struct session *s, size_t len)
{
	struct meta_uuid id;
	uint64_t off;
	int r;

	r = wire_offset_decode(s->in, len, &off);
	if (r < 0)
		return r;
	if (s->pw) {
		r = patch_writer_sync(s->pw);
		if (r < 0)
			return r;
	}
	id = s->target;
	r = meta_checkpoint_set(node_meta(s->n), MIN(off, node_size(s->n)), &id);
	if (r < 0)
		return r;
	return send_offset(s->c, WIRE_ACK, off);
}

static int session_commit(struct session *s, size_t len)
{
	struct node *n = s->n;
	struct meta *m = node_meta(n);
	struct wire_uuid g;
	struct meta_uuid gen;
	int r;

	r = wire_commit_decode(s->in, len, &g);
	if (r < 0)
		return r;
	memcpy(gen.b, g.b, 16);
	if (s->pw) {
		r = patch_writer_sync(s->pw);
		if (r < 0)
			return r;
	}
	/* Generation, bitmap, trust, checkpoint and state in one update. */
	r = meta_resync_commit(m, &gen, true);
	if (r < 0)
		return r;
	session_write_end(s);
	pthread_mutex_lock(&n->lock);
	/* The bitmap now counts from gen: no older base applies. */
	memset(&n->base, 0, sizeof(n->base));
	n->last_resync = time(NULL);
	node_state_save_locked(n);
	pthread_mutex_unlock(&n->lock);
	logf_("resync from '%s' committed: UpToDate (%" PRIu64 " BLOCKS and %" PRIu64
	      " EXTENTS frames written)",
	      s->peer, s->n_blocks, s->n_extents);
	event_publish_state(n->bus, n->self->name, "Inconsistent", "UpToDate", true, "resync committed");
	return send_offset(s->c, WIRE_ACK, node_size(n));
}

static int session_status(struct session *s, size_t len)
{
	struct node *n = s->n;
	struct wire_status st = {0};
	struct meta_info mi;
	unsigned char buf[128];
	size_t olen;
	int r;

	if (len != 0)
		return -EBADMSG;
	meta_info_get(node_meta(n), &mi);
	st.dirty_bytes = meta_dirty_bytes(node_meta(n));
	pthread_mutex_lock(&n->lock);
	st.last_resync = n->last_resync > 0 ? (uint64_t)n->last_resync : 0;
	pthread_mutex_unlock(&n->lock);
	if (mi.checkpoint_set) {
		st.flags |= WIRE_STATUS_CHECKPOINT;
		st.checkpoint_off = mi.checkpoint_off;
		memcpy(st.checkpoint_id.b, mi.checkpoint_id.b, 16);
	}
	r = wire_status_encode(&st, buf, sizeof(buf), &olen);
	if (r < 0)
		return r;
	return peer_conn_send_frame(s->c, WIRE_STATUS, buf, olen);
}

/* The dirty bitmap, in pieces; a request for offset 0 takes a new
 * snapshot. */
static int session_bitmap(struct session *s, size_t len)
{
	struct node *n = s->n;
	uint64_t off, nb = DIV_ROUND_UP(node_size(n), n->cfg->block_size);
	size_t k, olen;
	long long got;
	int r;

	r = wire_offset_decode(s->in, len, &off);
	if (r < 0)
		return r;
	if (off == 0 || !s->bitmap) {
		free(s->bitmap);
		s->bitmap_size = (size_t)DIV_ROUND_UP(nb, 8);
		if (s->bitmap_size > RESYNC_META_BITMAP_MAX)
			return -EFBIG;
		s->bitmap = calloc(1, s->bitmap_size ? s->bitmap_size : 1);
		if (!s->bitmap)
			return -ENOMEM;
		got = meta_bitmap_read(node_meta(n), s->bitmap, s->bitmap_size);
		if (got < 0)
			return (int)got;
	}
	if (off > s->bitmap_size)
		return -EBADMSG;
	k = (size_t)MIN((uint64_t)(s->bitmap_size - off), (uint64_t)RESYNC_WIRE_BLOCKS_MAX);
	r = wire_bitmap_encode(off, s->bitmap_size, s->bitmap + off, k, s->out,
			       RESYNC_WIRE_FRAME_MAX, &olen);
	if (r < 0)
		return r;
	return peer_conn_send_frame(s->c, WIRE_BITMAP, s->out, olen);
}

/* A secondary that took writes of its own since its last commit holds
 * data the primary lacks: Diverged, durably. */
static void session_state_note(struct session *s)
{
	struct meta *m = node_meta(s->n);
	struct meta_info mi;

	meta_info_get(m, &mi);
	if ((mi.state == META_STATE_UPTODATE || mi.state == META_STATE_OUTDATED) &&
	    mi.bitmap_trusted && meta_dirty_bytes(m) > 0) {
		if (meta_state_set(m, META_STATE_DIVERGED) == 0) {
			logf_("this volume has writes the primary '%s' lacks: state Diverged",
			      s->peer);
			/* The transition is announced once, here, by the node
			 * that turned Diverged. */
			event_publish_state(s->n->bus, s->n->self->name, meta_state_name(mi.state),
					    "Diverged", false,
					    "it holds writes that the primary lacks");
		}
	}
}

/* CONTROL from a secondary (node_forward()): one request line, run by
 * this node's own control socket as if a local client had sent it, its
 * reply lines sent back in CONTROL frames until the result. Only the
 * cluster-wide commands a secondary forwards are taken. */
static int session_control(struct session *s, size_t len)
{
	static const char *const allowed[] = {"verify", "resync", "cancel", "pause", "resume", "rate"};
	struct node *n = s->n;
	_cleanup_close_ int fd = -1;
	json_object *req, *cmd;
	const char *name = NULL;
	bool ok = false;
	int r;

	if (!n->is_primary || !n->self->control) {
		send_text(s->c, WIRE_ERROR, WIRE_REASON_OTHER,
			  n->is_primary ? "the primary has no control socket"
					: "this node is not the primary");
		return -ECANCELED;
	}
	if (len == 0 || len > RESYNC_CONTROL_LINE_MAX || s->in[len - 1] != '\n')
		return -EBADMSG;
	s->in[len - 1] = 0;
	req = json_tokener_parse((const char *)s->in);
	if (req && json_object_is_type(req, json_type_object) &&
	    json_object_object_get_ex(req, "cmd", &cmd) && json_object_is_type(cmd, json_type_string)) {
		name = json_object_get_string(cmd);
		for (size_t i = 0; i < ARRAY_SIZE(allowed) && !ok; i++)
			ok = !strcmp(name, allowed[i]);
	}
	if (!ok) {
		logf_("refused a forwarded request from '%s': not a cluster-wide command", s->peer);
		send_text(s->c, WIRE_ERROR, WIRE_REASON_MESSAGE,
			  "only verify, resync, cancel, pause, resume and rate are forwarded");
		json_object_put(req);
		return -ECANCELED;
	}
	logf_("'%s' forwarded a '%s' request", s->peer, name);
	r = control_connect(n->self->control, &fd);
	if (r >= 0)
		r = control_send(fd, req);
	json_object_put(req);
	while (r >= 0) {
		json_object *o = NULL;
		const char *text;
		size_t tl, total;
		bool last;

		r = control_recv(fd, -1, &o);
		if (r < 0)
			break;
		last = control_is_result(o);
		text = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);
		tl = strlen(text);
		total = tl + 1; /* the line and its newline */
		for (size_t off = 0, k; r >= 0 && off < total; off += k) {
			k = MIN(total - off, (size_t)RESYNC_WIRE_FRAME_MAX);
			memcpy(s->out, text + off, off < tl ? MIN(k, tl - off) : 0);
			if (off + k == total)
				s->out[k - 1] = '\n';
			r = peer_conn_send_frame(s->c, WIRE_CONTROL, s->out, k);
		}
		json_object_put(o);
		if (last)
			return r < 0 ? -ECANCELED : 0;
	}
	if (r == -ECONNRESET || r == -EPIPE)
		return -ECANCELED; /* the secondary went away */
	logf_("forwarded '%s' from '%s' failed: %s", name, s->peer, strerror(-r));
	send_text(s->c, WIRE_ERROR, WIRE_REASON_IO, "the primary's control socket failed");
	return -ECANCELED;
}

static void session_serve(struct session *s)
{
	struct node *n = s->n;
	struct wire_hello h, mine;
	struct wire_text why;
	bool from_primary;
	uint16_t type;
	size_t len;
	int r;

	r = peer_conn_recv_frame(s->c, &type, s->in, RESYNC_WIRE_FRAME_MAX, &len);
	if (r < 0) {
		logf_("session with %s ended before its hello: %s", peer_conn_remote(s->c),
		      peer_conn_error(s->c));
		return;
	}
	if (type != WIRE_HELLO || wire_hello_decode(s->in, len, &h) < 0) {
		logf_("refused %s: its first message is not a valid hello", peer_conn_remote(s->c));
		send_text(s->c, WIRE_REFUSE, WIRE_REASON_MESSAGE, "the first message must be HELLO");
		return;
	}
	snprintf(s->peer, sizeof(s->peer), "%s", h.node);
	r = node_hello_check(n, &h, &why);
	if (r < 0 && why.code == WIRE_REASON_VOLUME_SIZE && node_grow_to_primary(n, &h))
		r = node_hello_check(n, &h, &why);
	if (r < 0) {
		logf_("refused '%s': %s", h.node, why.text);
		send_text(s->c, WIRE_REFUSE, why.code, why.text);
		return;
	}
	from_primary = (h.flags & WIRE_HELLO_PRIMARY) && n->cfg->primary &&
		       !strcmp(h.node, n->cfg->primary) && !n->is_primary;
	if (from_primary) {
		memcpy(s->target.b, h.generation.b, 16);
		session_state_note(s);
	}
	node_hello_make(n, &mine);
	r = wire_hello_encode(&mine, s->out, RESYNC_WIRE_FRAME_MAX, &len);
	if (r < 0 || peer_conn_send_frame(s->c, WIRE_HELLO_ACK, s->out, len) < 0)
		return;
	peer_conn_set_timeout(s->c, NODE_SESSION_TIMEOUT_MS);

	for (;;) {
		r = peer_conn_recv_frame(s->c, &type, s->in, RESYNC_WIRE_FRAME_MAX, &len);
		if (r == -ECONNRESET)
			break;
		if (r < 0) {
			logf_("session with '%s' failed: %s", s->peer, peer_conn_error(s->c));
			break;
		}
		if (type == WIRE_HASH_REQ) {
			r = session_hash_req(s, len);
		} else if (type == WIRE_PAGE_REQ) {
			r = session_page_req(s, len);
		} else if (type == WIRE_STATUS_REQ) {
			r = session_status(s, len);
		} else if (type == WIRE_BITMAP_REQ) {
			r = session_bitmap(s, len);
		} else if (type == WIRE_CONTROL) {
			r = session_control(s, len);
			if (r == -ECANCELED)
				break; /* said, or nobody to say it to */
		} else if ((type == WIRE_BLOCKS || type == WIRE_EXTENTS || type == WIRE_CHECKPOINT ||
			    type == WIRE_COMMIT) &&
			   !from_primary) {
			logf_("refused writes from '%s': it is not the primary", s->peer);
			send_text(s->c, WIRE_ERROR, WIRE_REASON_MESSAGE,
				  "only the primary may rewrite this volume");
			break;
		} else if (type == WIRE_BLOCKS) {
			r = session_blocks(s, len);
		} else if (type == WIRE_EXTENTS) {
			r = session_extents(s, len);
		} else if (type == WIRE_CHECKPOINT) {
			r = session_checkpoint(s, len);
		} else if (type == WIRE_COMMIT) {
			r = session_commit(s, len);
		} else if (type == WIRE_ERROR) {
			struct wire_text t;

			if (wire_text_decode(s->in, len, &t) == 0)
				logf_("'%s' stopped the session: %s", s->peer, t.text);
			break;
		} else {
			logf_("unexpected %s from '%s'", wire_type_name(type), s->peer);
			send_text(s->c, WIRE_ERROR, WIRE_REASON_MESSAGE, "unexpected message");
			break;
		}
		if (r < 0) {
			char msg[256];

			snprintf(msg, sizeof(msg), "'%s' failed: %s", n->self->name, strerror(-r));
			logf_("session with '%s': %s from %s", s->peer, strerror(-r),
			      wire_type_name(type));
			send_text(s->c, WIRE_ERROR,
				  r == -EBUSY ? WIRE_REASON_BUSY
				  : r == -EBADMSG ? WIRE_REASON_MESSAGE
						  : WIRE_REASON_IO,
				  msg);
			/* The primary may be streaming: take what it sends
			 * until it read the ERROR and closed (briefly), so
			 * that our close does not reset the connection
			 * before it could. */
			{
				uint64_t until = now_usec() + NODE_ERROR_LINGER_MS * 1000ull;

				peer_conn_set_timeout(s->c, NODE_ERROR_LINGER_MS);
				while (now_usec() < until &&
				       peer_conn_recv_frame(s->c, &type, s->in, RESYNC_WIRE_FRAME_MAX,
							    &len) == 0)
					;
			}
			break;
		}
	}
	if (s->writing) {
		logf_("resync from '%s' stopped before its commit: state stays Inconsistent",
		      s->peer);
		event_publish_state(n->bus, n->self->name, "Inconsistent", "Inconsistent", false,
				    "the resync stopped before its commit");
	}
	session_write_end(s);
}

static void *session_thread(void *arg)
{
	struct session *s = arg;
	struct node *n = s->n;

	s->in = malloc(RESYNC_WIRE_FRAME_MAX);
	s->out = malloc(RESYNC_WIRE_FRAME_MAX);
	if (s->in && s->out)
		session_serve(s);
	if (s->tree && s->built && !s->wrote) {
		struct tree_cache c = {s->hashes, s->tree, s->seed, s->fanout, s->leaf, s->id,
				       s->built};

		tree_cache_put(n, &c);
		s->hashes = NULL;
		s->tree = NULL;
	}
	hashtree_free(s->tree);
	free(s->hashes);
	free(s->bitmap);
	free(s->in);
	free(s->out);
	peer_conn_free(s->c);
	free(s);
	atomic_fetch_sub(&n->sessions, 1);
	return NULL;
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
			logf_("%s", err[0] ? err : strerror(-r));
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

/* ---- the asking side ---- */

/* Connect to peer and exchange hellos; *ret_hello is the peer's. */
static int node_peer_open(struct node *n, const struct node_config *peer, bool write, char *err,
			  size_t errlen, struct peer_conn **ret, struct wire_hello *ret_hello)
{
	struct peer_conn *c = NULL;
	struct wire_hello mine;
	struct wire_text why;
	unsigned char *buf;
	uint16_t type;
	size_t len;
	int r;

	r = peer_conn_connect(n->ctx, peer, err, errlen, &c);
	if (r == -EACCES && !strstr(err, "authentication")) {
		/* The TLS handshake failed on the pre-shared key (or the
		 * cluster name that selects it): say so in the operator's
		 * words. */
		_cleanup_free_ char *detail = strdup(err);

		snprintf(err, errlen, "node '%s': authentication failed: %s", peer->name,
			 detail ? detail : "the cluster key differs");
	}
	if (r < 0)
		return r;
	buf = malloc(RESYNC_WIRE_FRAME_MAX);
	if (!buf) {
		peer_conn_free(c);
		return -ENOMEM;
	}
	node_hello_make(n, &mine);
	if (write)
		mine.features |= WIRE_FEATURE_GROW;
	r = wire_hello_encode(&mine, buf, RESYNC_WIRE_FRAME_MAX, &len);
	if (r >= 0)
		r = peer_conn_send_frame(c, WIRE_HELLO, buf, len);
	if (r >= 0)
		r = peer_conn_recv_frame(c, &type, buf, RESYNC_WIRE_FRAME_MAX, &len);
	if (r < 0) {
		snprintf(err, errlen, "node '%s': %s", peer->name, peer_conn_error(c));
		goto fail;
	}
	if (type == WIRE_REFUSE) {
		struct wire_text t;

		if (wire_text_decode(buf, len, &t) == 0)
			snprintf(err, errlen, "node '%s' refused: %s", peer->name, t.text);
		else
			snprintf(err, errlen, "node '%s' refused", peer->name);
		r = -EPERM;
		goto fail;
	}
	if (type != WIRE_HELLO_ACK || wire_hello_decode(buf, len, ret_hello) < 0) {
		snprintf(err, errlen, "node '%s' answered with %s", peer->name, wire_type_name(type));
		r = -EBADMSG;
		goto fail;
	}
	if (node_hello_check(n, ret_hello, &why) < 0) {
		snprintf(err, errlen, "node '%s': %s", peer->name, why.text);
		send_text(c, WIRE_ERROR, why.code, why.text);
		r = -EPERM;
		goto fail;
	}
	free(buf);
	peer_conn_set_timeout(c, NODE_SESSION_TIMEOUT_MS);
	*ret = c;
	return 0;
fail:
	free(buf);
	peer_conn_free(c);
	return r;
}

/* Ask an opened peer for its status (STATUS_REQ). */
static int node_peer_status(struct peer_conn *c, unsigned char *buf, struct wire_status *ret)
{
	uint16_t type;
	size_t len;
	int r;

	r = peer_conn_send_frame(c, WIRE_STATUS_REQ, buf, 0);
	if (r >= 0)
		r = peer_conn_recv_frame(c, &type, buf, RESYNC_WIRE_FRAME_MAX, &len);
	if (r < 0)
		return r;
	if (type != WIRE_STATUS)
		return -EBADMSG;
	return wire_status_decode(buf, len, ret);
}

/* Fetch an opened peer's dirty bitmap, size bytes, into bm. */
static int node_peer_bitmap(struct peer_conn *c, unsigned char *buf, unsigned char *bm,
			    size_t size)
{
	size_t off = 0;

	do {
		struct wire_bitmap b;
		unsigned char ob[16];
		uint16_t type;
		size_t len;
		int r;

		r = wire_offset_encode(off, ob, sizeof(ob), &len);
		if (r >= 0)
			r = peer_conn_send_frame(c, WIRE_BITMAP_REQ, ob, len);
		if (r >= 0)
			r = peer_conn_recv_frame(c, &type, buf, RESYNC_WIRE_FRAME_MAX, &len);
		if (r < 0)
			return r;
		if (type != WIRE_BITMAP || wire_bitmap_decode(buf, len, &b) < 0 ||
		    b.total != size || b.offset != off || (b.len == 0 && off < size))
			return -EBADMSG;
		memcpy(bm + off, b.data, b.len);
		off += b.len;
	} while (off < size);
	return 0;
}

enum job_mode {
	JOB_FULL = 0, /* compare through the hash tree */
	JOB_QUICK,    /* the union of both dirty bitmaps */
};

struct job {
	struct node *n;
	const struct node_config *peer;
	struct control_client *cli;
	pthread_mutex_t *cli_lock;
	const struct hashtree *tree;
	uint32_t leaf;	   /* bytes a leaf of tree covers */
	unsigned fanout;   /* tree's */
	const unsigned char *pbitmap; /* the primary's bitmap, for JOB_QUICK */
	size_t bitmap_size;
	uint64_t seed;
	bool write;
	uint64_t max_rate;
	struct meta_uuid gen;
	pthread_t t;
	bool started; /* t runs */
	uint64_t t0;

	/* After job_open_thread(): the session and what the peer said. */
	struct peer_conn *c;
	unsigned char *buf;
	struct wire_hello hello;
	uint64_t features; /* both peers' */
	struct wire_status status;
	bool opened;
	enum job_mode mode;
	bool diverged;
	bool resume; /* Inconsistent with a checkpoint of this generation */
	bool ack_pending; /* a CHECKPOINT's ACK is not read yet */
	bool prefetched; /* a HASH_REQ of one leaf awaits its answer */

	int r;
	char err[RESYNC_WIRE_TEXT_MAX + 256];
	char state[32];
	struct rangelist ranges;
	uint64_t differing_blocks, differing_bytes;
	uint64_t bytes_compared, bytes_read, bytes_sent, bytes_written;
	double seconds;
};

static void job_progress(struct job *j, const char *phase, uint64_t done, uint64_t total,
			 uint64_t t0)
{
	json_object *o = json_object_new_object();
	double secs = (double)(now_usec() - t0) / 1e6;
	double rate = secs > 0 ? (double)done / secs : 0;

	json_object_object_add(o, "type", json_object_new_string("progress"));
	json_object_object_add(o, "node", json_object_new_string(j->peer->name));
	json_object_object_add(o, "phase", json_object_new_string(phase));
	json_object_object_add(o, "bytes_compared", json_object_new_uint64(j->bytes_compared));
	json_object_object_add(o, "bytes_sent", json_object_new_uint64(j->bytes_sent));
	json_object_object_add(o, "bytes_done", json_object_new_uint64(done));
	json_object_object_add(o, "bytes_total", json_object_new_uint64(total));
	json_object_object_add(o, "rate", json_object_new_double(rate));
	json_object_object_add(o, "eta", json_object_new_double(rate > 0 ? (double)(total - done) / rate : 0));
	pthread_mutex_lock(j->cli_lock);
	control_client_send(j->cli, o);
	pthread_mutex_unlock(j->cli_lock);
	json_object_put(o);
	if (j->write)
		event_publish_progress(j->n->bus, j->peer->name, phase, j->bytes_compared,
				       j->bytes_sent, done, total, rate);
}

/* The leaf size a HASH_REQ names: none for a peer that cannot read it
 * (its leaves are blocks, and so are this run's then). */
static uint32_t job_leaf_wire(const struct job *j)
{
	return j->features & WIRE_FEATURE_FINE_LEAVES ? j->leaf : 0;
}

/* Make a full job's peer build its hash tree for seed now: a HASH_REQ of
 * one leaf, answered once the tree is built, read by job_compare(). */
static void job_prefetch(struct job *j, uint64_t seed)
{
	struct hashtree_range one = {0, 1};
	size_t len;

	if (!j->opened || j->mode != JOB_FULL)
		return;
	if (wire_hash_req_encode(seed, 0, j->fanout, job_leaf_wire(j), &one, 1, j->buf,
				 RESYNC_WIRE_FRAME_MAX, &len) < 0)
		return;
	/* A failure shows again at the walk's first request. */
	j->prefetched = peer_conn_send_frame(j->c, WIRE_HASH_REQ, j->buf, len) >= 0;
}

/* Receive a secondary's reply into buf: a transport failure or an ERROR
 * it sent becomes the job's error text. Returns 0 with *ret_type and
 * *ret_len, or -errno (-EIO for an ERROR). */
static int job_recv(struct job *j, struct peer_conn *c, unsigned char *buf, uint16_t *ret_type,
		    size_t *ret_len)
{
	int r = peer_conn_recv_frame(c, ret_type, buf, RESYNC_WIRE_FRAME_MAX, ret_len);

	if (r < 0) {
		snprintf(j->err, sizeof(j->err), "node '%s': %s", j->peer->name,
			 peer_conn_error(c));
		return r;
	}
	if (*ret_type == WIRE_ERROR) {
		struct wire_text t = {0};

		wire_text_decode(buf, *ret_len, &t);
		snprintf(j->err, sizeof(j->err), "node '%s': %s", j->peer->name, t.text);
		return -EIO;
	}
	return 0;
}

/* Send one frame and receive the reply, as job_recv(). */
static int job_ask(struct job *j, struct peer_conn *c, uint16_t type, unsigned char *buf,
		   size_t len, uint16_t *ret_type, size_t *ret_len)
{
	int r = peer_conn_send_frame(c, type, buf, len);

	if (r < 0) {
		snprintf(j->err, sizeof(j->err), "node '%s': %s", j->peer->name,
			 peer_conn_error(c));
		return r;
	}
	return job_recv(j, c, buf, ret_type, ret_len);
}

/* The prefetch's answer: a HASH_REPLY of one hash (or an ERROR, said). */
static int job_prefetch_wait(struct job *j, struct peer_conn *c, unsigned char *buf)
{
	struct wire_hash_reply rep;
	uint16_t type;
	size_t len;
	int r;

	j->prefetched = false;
	r = job_recv(j, c, buf, &type, &len);
	if (r < 0)
		return r;
	if (type != WIRE_HASH_REPLY || wire_hash_reply_decode(buf, len, &rep) < 0 ||
	    rep.n_hashes != 1)
		return -EBADMSG;
	return 0;
}

/* Blocks of bs bytes that the sorted ranges of l touch. */
static uint64_t ranges_blocks(const struct rangelist *l, uint64_t bs)
{
	uint64_t n = 0, last = UINT64_MAX;

	for (size_t i = 0; i < l->n; i++) {
		uint64_t first = l->v[i].off / bs, end = (l->v[i].off + l->v[i].len - 1) / bs;

		if (first == last)
			first++;
		if (end >= first)
			n += end - first + 1;
		last = end;
	}
	return n;
}

static int job_compare(struct job *j, struct peer_conn *c, unsigned char *buf)
{
	struct node *n = j->n;
	_cleanup_free_ struct hash128 *h = malloc(RESYNC_WIRE_HASHES_MAX * sizeof(*h));
	struct hashtree_diff *d = NULL;
	struct hashtree_step st;
	const uint64_t *leaves;
	uint64_t size = node_size(n), bs = n->cfg->block_size;
	size_t nl, len;
	uint16_t type;
	int r;

	if (!h)
		return -ENOMEM;
	if (j->prefetched) {
		r = job_prefetch_wait(j, c, buf);
		if (r < 0)
			return r;
	}
	r = hashtree_diff_new(j->tree, 0, 0, &d);
	if (r < 0)
		return r;
	while ((r = hashtree_diff_next(d, &st)) == 1) {
		struct wire_hash_reply rep;

		r = wire_hash_req_encode(j->seed, st.level, hashtree_fanout(j->tree),
					 job_leaf_wire(j), st.ranges,
					 st.n_ranges, buf, RESYNC_WIRE_FRAME_MAX, &len);
		if (r < 0)
			break;
		r = job_ask(j, c, WIRE_HASH_REQ, buf, len, &type, &len);
		if (r < 0)
			break;
		if (type != WIRE_HASH_REPLY || wire_hash_reply_decode(buf, len, &rep) < 0 ||
		    rep.n_hashes != st.n_hashes) {
			r = -EBADMSG;
			break;
		}
		r = wire_hash_reply_get(&rep, h, RESYNC_WIRE_HASHES_MAX);
		if (r >= 0)
			r = hashtree_diff_feed(d, h, st.n_hashes);
		if (r < 0)
			break;
	}
	if (r < 0) {
		hashtree_diff_free(d);
		return r;
	}
	leaves = hashtree_diff_leaves(d, &nl);
	for (size_t i = 0; i < nl && r >= 0; i++) {
		uint64_t off = leaves[i] * j->leaf;

		r = rangelist_add(&j->ranges, off, MIN((uint64_t)j->leaf, size - off));
	}
	j->differing_blocks = ranges_blocks(&j->ranges, bs);
	j->differing_bytes = rangelist_bytes(&j->ranges);
	j->bytes_compared = size;
	hashtree_diff_free(d);
	return r < 0 ? r : 0;
}

static int job_wait_ack(struct job *j, struct peer_conn *c, unsigned char *buf)
{
	uint16_t type;
	size_t len;
	int r = job_recv(j, c, buf, &type, &len);

	if (r < 0)
		return r;
	if (type != WIRE_ACK)
		return -EBADMSG;
	return 0;
}

/* Whether the peer answers PAGE_REQ: protocol 2 and the feature. */
static bool job_pages(const struct job *j)
{
	uint16_t v;

	return wire_proto_negotiate(j->hello.proto_min, j->hello.proto_max, WIRE_PROTO_MIN,
				    WIRE_PROTO_MAX, &v) == 0 &&
	       v >= 2 && (j->features & WIRE_FEATURE_PAGES);
}

/* Ask the peer for the hashes of the pages of batch[0, nb) (npages in
 * all) into rh. */
static int job_page_hashes(struct job *j, struct peer_conn *c, unsigned char *buf,
			   const struct hashtree_range *batch, size_t nb, uint64_t npages,
			   struct hash128 *rh)
{
	struct wire_hash_reply rep;
	uint16_t type;
	size_t len;
	int r;

	r = wire_page_req_encode(j->seed, RESYNC_PAGE, batch, nb, buf, RESYNC_WIRE_FRAME_MAX, &len);
	if (r < 0)
		return r;
	r = job_ask(j, c, WIRE_PAGE_REQ, buf, len, &type, &len);
	if (r < 0)
		return r;
	if (type != WIRE_PAGE_REPLY || wire_hash_reply_decode(buf, len, &rep) < 0 ||
	    rep.n_hashes != npages)
		return -EBADMSG;
	return wire_hash_reply_get(&rep, rh, RESYNC_WIRE_HASHES_MAX);
}

/* Page runs waiting to go as one EXTENTS frame, with a peer that speaks
 * WIRE_FEATURE_EXTENTS: their bytes concatenated in data and their table.
 * Runs are added in ascending order; bytes count as written when the
 * frame is sent. */
struct job_batch {
	unsigned char *data; /* RESYNC_WIRE_BLOCKS_MAX bytes */
	struct wire_extent ext[RESYNC_WIRE_EXTENTS_MAX];
	size_t n, len;
};

/* Between two frames of a transfer: what the secondary sent meanwhile.
 * An ERROR (its disk full, say) stops the transfer with its reason at
 * once, not with a broken pipe later; a checkpoint's ACK is taken. */
static int job_poll_peer(struct job *j, struct peer_conn *c)
{
	unsigned char small[RESYNC_WIRE_TEXT_MAX + 256];
	uint16_t type;
	size_t len;
	int r;

	if (!peer_conn_readable(c))
		return 0;
	r = job_recv(j, c, small, &type, &len);
	if (r < 0)
		return r;
	if (type != WIRE_ACK || !j->ack_pending)
		return -EBADMSG;
	j->ack_pending = false;
	return 0;
}

static int job_send_frame(struct job *j, struct peer_conn *c, uint16_t type,
			  const unsigned char *buf, size_t elen, size_t len)
{
	int r = job_poll_peer(j, c);

	if (r < 0)
		return r;
	r = peer_conn_send_frame(c, type, buf, elen);

	if (r < 0) {
		snprintf(j->err, sizeof(j->err), "node '%s': %s", j->peer->name,
			 peer_conn_error(c));
		return r;
	}
	j->bytes_written += len;
	return 0;
}

/* Send the batched runs, if any, as one EXTENTS frame. */
static int job_flush(struct job *j, struct peer_conn *c, struct wire_zstd *z, unsigned char *buf,
		     struct job_batch *bt)
{
	size_t elen;
	int r;

	if (!bt || bt->n == 0)
		return 0;
	r = wire_extents_encode(z, bt->ext, bt->n, bt->data, buf, RESYNC_WIRE_FRAME_MAX, &elen);
	if (r < 0)
		return r;
	r = job_send_frame(j, c, WIRE_EXTENTS, buf, elen, bt->len);
	if (r < 0)
		return r;
	bt->n = 0;
	bt->len = 0;
	return 0;
}

/* Send data[0, len) at off: into the batch bt (sent when full), or as a
 * BLOCKS frame without one (bt NULL). Counts what was sent. */
static int job_send(struct job *j, struct peer_conn *c, struct wire_zstd *z, unsigned char *buf,
		    struct job_batch *bt, uint64_t off, const unsigned char *data, size_t len)
{
	struct wire_extent *last;
	size_t elen;
	int r;

	if (!bt) {
		r = wire_blocks_encode(z, off, data, len, buf, RESYNC_WIRE_FRAME_MAX, &elen);
		if (r < 0)
			return r;
		return job_send_frame(j, c, WIRE_BLOCKS, buf, elen, len);
	}
	last = bt->n ? &bt->ext[bt->n - 1] : NULL;
	if (bt->len + len > RESYNC_WIRE_BLOCKS_MAX ||
	    (last && off < last->offset + last->len) ||
	    (bt->n == RESYNC_WIRE_EXTENTS_MAX && off != last->offset + last->len)) {
		r = job_flush(j, c, z, buf, bt);
		if (r < 0)
			return r;
		last = NULL;
	}
	if (last && off == last->offset + last->len)
		last->len += (uint32_t)len; /* adjacent: one extent */
	else
		bt->ext[bt->n++] = (struct wire_extent){off, (uint32_t)len};
	memcpy(bt->data + bt->len, data, len);
	bt->len += len;
	return 0;
}

/* Send the differing ranges, then COMMIT. The ranges go in batches of at
 * most RESYNC_WIRE_RANGES_MAX pieces and RESYNC_WIRE_HASHES_MAX pages;
 * with a peer that speaks PAGE_REQ, the peer's page hashes of a batch are
 * fetched first and only the pages whose hashes differ from this volume's
 * travel (adjacent ones merged), so that a 4 KiB write costs 4 KiB and not
 * a block. The checkpoint offset is the end of the last piece processed:
 * every byte below it was sent or already equal. */
static int job_transfer(struct job *j, struct peer_conn *c, unsigned char *buf)
{
	struct node *n = j->n;
	/* Page hashes pay when a range is coarser than a page: a quick
	 * resync's blocks, or a tree whose leaves are blocks. */
	const bool pages = job_pages(j) && (j->mode == JOB_QUICK || j->leaf > RESYNC_PAGE);
	_cleanup_free_ unsigned char *raw = malloc(RESYNC_WIRE_BLOCKS_MAX);
	_cleanup_free_ struct hashtree_range *batch = malloc(RESYNC_WIRE_RANGES_MAX * sizeof(*batch));
	_cleanup_free_ struct hash128 *rh = pages ? malloc(RESYNC_WIRE_HASHES_MAX * sizeof(*rh)) : NULL;
	_cleanup_free_ struct job_batch *bt = NULL;
	_cleanup_free_ unsigned char *bdata = NULL;
	struct wire_zstd *z = NULL;
	int fd = volume_fd(fusefs_volume(n->fs));
	uint64_t t0 = now_usec(), last = t0, done = 0, since_ckpt = 0, tail;
	struct pacer pace = {0};
	unsigned char cbuf[64];
	struct wire_uuid g;
	size_t i = 0, len;
	uint64_t cur = j->ranges.n ? j->ranges.v[0].off : 0;
	int r;

	_Static_assert(RESYNC_WIRE_BLOCKS_MAX % RESYNC_PAGE == 0, "pieces end on pages");
	if (!raw || !batch || (pages && !rh))
		return -ENOMEM;
	if (j->features & WIRE_FEATURE_EXTENTS) {
		bt = calloc(1, sizeof(*bt));
		bdata = malloc(RESYNC_WIRE_BLOCKS_MAX);
		if (!bt || !bdata)
			return -ENOMEM;
		bt->data = bdata;
	}
	r = wire_zstd_new(n->cfg->compress_level, &z);
	if (r < 0)
		return r;
	while (i < j->ranges.n) {
		uint64_t npages = 0, idx = 0;
		size_t nb = 0;

		/* The next batch, from the cursor (i, cur). */
		while (i < j->ranges.n && nb < RESYNC_WIRE_RANGES_MAX &&
		       npages < RESYNC_WIRE_HASHES_MAX) {
			uint64_t end = j->ranges.v[i].off + j->ranges.v[i].len;
			uint64_t take = MIN(end - cur,
					    (RESYNC_WIRE_HASHES_MAX - npages) * (uint64_t)RESYNC_PAGE);

			batch[nb++] = (struct hashtree_range){cur, take};
			npages += wire_pages(take, RESYNC_PAGE);
			cur += take;
			if (cur == end && ++i < j->ranges.n)
				cur = j->ranges.v[i].off;
		}
		if (pages) {
			if (j->ack_pending) {
				j->ack_pending = false;
				r = job_wait_ack(j, c, buf);
				if (r < 0)
					goto out;
			}
			r = job_page_hashes(j, c, buf, batch, nb, npages, rh);
			if (r < 0)
				goto out;
		}
		for (size_t b = 0; b < nb; b++) {
			uint64_t off = batch[b].first, end = off + batch[b].count;

			while (off < end) {
				size_t k = (size_t)MIN(end - off, (uint64_t)RESYNC_WIRE_BLOCKS_MAX);
				uint64_t before = j->bytes_written;

				if (atomic_load(&n->cancel)) {
					send_text(c, WIRE_ERROR, WIRE_REASON_OTHER, "resync cancelled");
					snprintf(j->err, sizeof(j->err), "cancelled");
					r = -ECANCELED;
					goto out;
				}
				r = fd_pread_full(fd, raw, k, off);
				if (r < 0)
					goto out;
				j->bytes_read += k;
				if (!pages) {
					r = job_send(j, c, z, buf, bt, off, raw, k);
				} else {
					/* Runs of pages whose hashes differ. */
					size_t run = 0, nrun = 0;

					for (size_t p = 0; p < k && r >= 0; p += RESYNC_PAGE) {
						size_t pl = MIN((size_t)RESYNC_PAGE, k - p);
						struct hash128 lh = hash_block(raw + p, pl, j->seed);

						if (!hash128_equal(&lh, &rh[idx++])) {
							if (!nrun)
								run = p;
							nrun += pl;
							continue;
						}
						if (nrun)
							r = job_send(j, c, z, buf, bt, off + run,
								     raw + run, nrun);
						nrun = 0;
					}
					if (r >= 0 && nrun)
						r = job_send(j, c, z, buf, bt, off + run, raw + run,
							     nrun);
				}
				if (r < 0)
					goto out;
				off += k;
				done += k;
				since_ckpt += j->bytes_written - before;
				j->bytes_sent = peer_conn_bytes_sent(c);
				if (since_ckpt >= NODE_CHECKPOINT_BYTES) {
					since_ckpt = 0;
					/* off covers the batched runs: they go first. */
					r = job_flush(j, c, z, buf, bt);
					/* One checkpoint in flight: its ACK is read
					 * at the next one (or the next request),
					 * the bytes keep going while the secondary
					 * flushes. */
					if (r >= 0 && j->ack_pending)
						r = job_wait_ack(j, c, buf);
					if (r >= 0)
						r = wire_offset_encode(off, cbuf, sizeof(cbuf), &len);
					if (r >= 0)
						r = peer_conn_send_frame(c, WIRE_CHECKPOINT, cbuf, len);
					j->ack_pending = r >= 0;
					if (r < 0)
						goto out;
				}
				/* max_rate, pause and resume, changed live (ratectl.h). */
				ratectl_pace(&n->rate, &pace, j->bytes_written - before, &n->cancel);
				if (now_usec() - last >= NODE_PROGRESS_USEC) {
					last = now_usec();
					job_progress(j, "transfer", done, j->differing_bytes, t0);
				}
			}
		}
	}
	/* The last batch, paced like every other. */
	tail = j->bytes_written;
	r = job_flush(j, c, z, buf, bt);
	if (r < 0)
		goto out;
	j->bytes_sent = peer_conn_bytes_sent(c);
	ratectl_pace(&n->rate, &pace, j->bytes_written - tail, &n->cancel);
	if (atomic_load(&n->cancel)) {
		send_text(c, WIRE_ERROR, WIRE_REASON_OTHER, "resync cancelled");
		snprintf(j->err, sizeof(j->err), "cancelled");
		r = -ECANCELED;
		goto out;
	}
	memcpy(g.b, j->gen.b, 16);
	r = wire_commit_encode(&g, cbuf, sizeof(cbuf), &len);
	if (r >= 0)
		r = peer_conn_send_frame(c, WIRE_COMMIT, cbuf, len);
	if (r >= 0 && j->ack_pending)
		r = job_wait_ack(j, c, buf); /* the last checkpoint's */
	if (r >= 0)
		r = job_wait_ack(j, c, buf);
out:
	wire_zstd_free(z);
	return r;
}

/* Union of the secondary's and the primary's dirty bitmaps: the blocks a
 * quick resync sends, without a compare. */
static int job_quick(struct job *j)
{
	struct node *n = j->n;
	uint64_t size = node_size(n), bs = n->cfg->block_size, nb = DIV_ROUND_UP(size, bs);
	_cleanup_free_ unsigned char *bm = calloc(1, j->bitmap_size ? j->bitmap_size : 1);
	int r;

	if (!bm)
		return -ENOMEM;
	r = node_peer_bitmap(j->c, j->buf, bm, j->bitmap_size);
	if (r < 0) {
		snprintf(j->err, sizeof(j->err), "node '%s': cannot read its dirty bitmap: %s",
			 j->peer->name, r == -EBADMSG ? "malformed reply" : peer_conn_error(j->c));
		return r;
	}
	for (size_t i = 0; i < j->bitmap_size; i++) {
		unsigned char b = bm[i] | j->pbitmap[i];

		for (unsigned k = 0; b && k < 8; k++) {
			uint64_t blk = (uint64_t)i * 8 + k, off = blk * bs;

			if (!(b & (1u << k)) || blk >= nb)
				continue;
			r = rangelist_add(&j->ranges, off, MIN(bs, size - off));
			if (r < 0)
				return r;
			j->differing_blocks++;
		}
	}
	j->differing_bytes = rangelist_bytes(&j->ranges);
	return 0;
}

/* Phase one, all secondaries in parallel: connect, hellos, status. */
static void *job_open_thread(void *arg)
{
	struct job *j = arg;
	int r;

	j->t0 = now_usec();
	snprintf(j->state, sizeof(j->state), "Unknown");
	j->buf = malloc(RESYNC_WIRE_FRAME_MAX);
	if (!j->buf) {
		j->r = -ENOMEM;
		return NULL;
	}
	r = node_peer_open(j->n, j->peer, j->write, j->err, sizeof(j->err), &j->c, &j->hello);
	event_publish_peer(j->n->bus, j->peer->name, r >= 0);
	if (r >= 0) {
		r = node_peer_status(j->c, j->buf, &j->status);
		if (r < 0)
			snprintf(j->err, sizeof(j->err), "node '%s': no status: %s", j->peer->name,
				 r == -EBADMSG ? "malformed reply" : peer_conn_error(j->c));
	}
	if (r < 0) {
		if (!j->err[0])
			snprintf(j->err, sizeof(j->err), "node '%s': %s", j->peer->name,
				 strerror(-r));
		logf_("resync of '%s' failed: %s", j->peer->name, j->err);
		j->r = r;
		return NULL;
	}
	snprintf(j->state, sizeof(j->state), "%s", wire_state_name(j->hello.state));
	j->features = j->hello.features & node_features();
	j->opened = true;
	return NULL;
}

/* Phase two: compare (or take the bitmaps' union), then transfer. */
static void *job_thread(void *arg)
{
	struct job *j = arg;
	int r;

	if (j->mode == JOB_QUICK)
		r = job_quick(j);
	else
		r = job_compare(j, j->c, j->buf);
	if (r < 0)
		goto out;
	j->bytes_sent = peer_conn_bytes_sent(j->c);
	job_progress(j, j->mode == JOB_QUICK ? "dirty" : "compared", j->bytes_compared,
		     j->bytes_compared, j->t0);
	if (j->write) {
		r = job_transfer(j, j->c, j->buf);
		if (r >= 0)
			snprintf(j->state, sizeof(j->state), "UpToDate");
	} else if (j->hello.state == WIRE_STATE_INCONSISTENT) {
		snprintf(j->state, sizeof(j->state), "Inconsistent");
	} else if (j->diverged) {
		snprintf(j->state, sizeof(j->state), "Diverged");
	} else {
		snprintf(j->state, sizeof(j->state), "%s",
			 j->differing_bytes ? "Outdated" : "UpToDate");
	}
	j->bytes_sent = peer_conn_bytes_sent(j->c);
out:
	if (r < 0 && !j->err[0])
		snprintf(j->err, sizeof(j->err), "node '%s': %s", j->peer->name, strerror(-r));
	if (r < 0)
		logf_("resync of '%s' failed: %s", j->peer->name, j->err);
	j->r = r;
	j->seconds = (double)(now_usec() - j->t0) / 1e6;
	return NULL;
}

/* ---- control commands ---- */

static json_object *ranges_json(const struct rangelist *l)
{
	json_object *a = json_object_new_array();

	for (size_t i = 0; i < l->n; i++) {
		json_object *r = json_object_new_array();

		json_object_array_add(r, json_object_new_uint64(l->v[i].off));
		json_object_array_add(r, json_object_new_uint64(l->v[i].len));
		json_object_array_add(a, r);
	}
	return a;
}

static json_object *time_json(int64_t t)
{
	char buf[64];
	struct tm tm;
	time_t tt = (time_t)t;

	if (!t)
		return NULL;
	gmtime_r(&tt, &tm);
	strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
	return json_object_new_string(buf);
}

/* A secondary forwards a cluster-wide request to the primary over the
 * peer protocol (WIRE_FEATURE_CONTROL: the primary may be on another
 * machine) and relays the primary's reply lines, progress and result, to
 * its own client. */
static int node_forward(struct node *n, struct control_client *cli, json_object *req)
{
	const struct node_config *p = cluster_config_primary(n->cfg);
	_cleanup_free_ unsigned char *buf = malloc(RESYNC_WIRE_FRAME_MAX);
	_cleanup_free_ char *acc = NULL; /* reply bytes not yet a whole line */
	size_t have = 0, cap = 0, len, flen;
	struct peer_conn *c = NULL;
	struct wire_hello h;
	const char *text;
	uint16_t type;
	char err[512];
	int r;

	if (!p)
		return control_client_error(cli, "cluster '%s' has no primary", n->cfg->name), 0;
	if (!buf)
		return -ENOMEM;
	r = node_peer_open(n, p, false, err, sizeof(err), &c, &h);
	if (r < 0)
		return control_client_error(cli, "this node is a secondary; the primary '%s' cannot be reached: %s",
					    p->name, err),
		       0;
	if (!(h.features & node_features() & WIRE_FEATURE_CONTROL)) {
		peer_conn_free(c);
		return control_client_error(cli, "this node is a secondary and the primary '%s' does not take forwarded requests (an older build): run the command there",
					    p->name),
		       0;
	}
	text = json_object_to_json_string_ext(req, JSON_C_TO_STRING_PLAIN);
	len = strlen(text);
	if (len + 1 > RESYNC_CONTROL_LINE_MAX) {
		peer_conn_free(c);
		return control_client_error(cli, "request longer than %d bytes", RESYNC_CONTROL_LINE_MAX), 0;
	}
	memcpy(buf, text, len);
	buf[len++] = '\n';
	/* A plan of a large volume says nothing for minutes: no deadline. */
	peer_conn_set_timeout(c, 0);
	r = peer_conn_send_frame(c, WIRE_CONTROL, buf, len);
	while (r >= 0) {
		char *nl;

		r = peer_conn_recv_frame(c, &type, buf, RESYNC_WIRE_FRAME_MAX, &flen);
		if (r < 0)
			break;
		if (type == WIRE_ERROR) {
			struct wire_text t = {0};

			wire_text_decode(buf, flen, &t);
			control_client_error(cli, "the primary '%s': %s", p->name, t.text);
			peer_conn_free(c);
			return 0;
		}
		if (type != WIRE_CONTROL || have + flen > RESYNC_CONTROL_REPLY_MAX) {
			r = -EBADMSG;
			break;
		}
		if (have + flen + 1 > cap) {
			size_t ncap = MAX(cap * 2, have + flen + 1);
			char *nb = realloc(acc, ncap);

			if (!nb) {
				r = -ENOMEM;
				break;
			}
			acc = nb;
			cap = ncap;
		}
		memcpy(acc + have, buf, flen);
		have += flen;
		/* Relay every whole line; the result ends the request. */
		while (r >= 0 && (nl = memchr(acc, '\n', have))) {
			size_t ll = (size_t)(nl - acc) + 1;
			json_object *o;
			bool last;

			*nl = 0;
			o = json_tokener_parse(acc);
			memmove(acc, acc + ll, have - ll);
			have -= ll;
			if (!o || !json_object_is_type(o, json_type_object)) {
				json_object_put(o);
				r = -EBADMSG;
				break;
			}
			last = control_is_result(o);
			r = control_client_send(cli, o);
			json_object_put(o);
			if (r < 0 || last) {
				/* Done, or our client went away: closing the
				 * connection ends the primary's side too. */
				peer_conn_free(c);
				return 0;
			}
		}
	}
	control_client_error(cli, "the primary '%s' went away: %s", p->name,
			     r == -EBADMSG ? "malformed reply" : peer_conn_error(c));
	peer_conn_free(c);
	return 0;
}

static int cmd_status(void *userdata, struct control_client *cli, json_object *req)
{
	struct node *n = userdata;
	json_object *res, *nodes;
	_cleanup_free_ unsigned char *buf = malloc(RESYNC_WIRE_FRAME_MAX);
	char u[40];

	(void)req;
	if (!buf)
		return -ENOMEM;
	res = json_object_new_object();
	nodes = json_object_new_array();
	json_object_object_add(res, "cluster", json_object_new_string(n->cfg->name));
	json_object_object_add(res, "primary",
			       n->cfg->primary ? json_object_new_string(n->cfg->primary) : NULL);
	json_object_object_add(res, "node", json_object_new_string(n->self->name));
	for (size_t i = 0; i < n->cfg->n_nodes; i++) {
		const struct node_config *nc = &n->cfg->nodes[i];
		json_object *o = json_object_new_object();
		bool primary = n->cfg->primary && !strcmp(nc->name, n->cfg->primary);

		json_object_object_add(o, "name", json_object_new_string(nc->name));
		json_object_object_add(o, "role",
				       json_object_new_string(primary ? "primary" : "secondary"));
		if (nc == n->self) {
			struct meta_info mi;
			int64_t last;

			meta_info_get(node_meta(n), &mi);
			pthread_mutex_lock(&n->lock);
			last = n->last_resync;
			pthread_mutex_unlock(&n->lock);
			json_object_object_add(o, "state",
					       json_object_new_string(meta_state_name(mi.state)));
			json_object_object_add(o, "generation",
					       json_object_new_string(meta_uuid_format(&mi.generation, u, sizeof(u))));
			json_object_object_add(o, "dirty_bytes",
					       json_object_new_uint64(meta_dirty_bytes(node_meta(n))));
			json_object_object_add(o, "connected", json_object_new_boolean(true));
			json_object_object_add(o, "last_resync", time_json(last));
		} else {
			struct peer_conn *c = NULL;
			struct wire_hello h;
			struct wire_status ws;
			json_object *last = NULL;
			char err[512];

			if (node_peer_open(n, nc, false, err, sizeof(err), &c, &h) == 0) {
				struct meta_uuid g;

				memcpy(g.b, h.generation.b, 16);
				json_object_object_add(o, "state",
						       json_object_new_string(wire_state_name(h.state)));
				json_object_object_add(o, "generation",
						       json_object_new_string(meta_uuid_format(&g, u, sizeof(u))));
				if (node_peer_status(c, buf, &ws) == 0) {
					json_object_object_add(o, "dirty_bytes",
							       json_object_new_uint64(ws.dirty_bytes));
					last = time_json((int64_t)ws.last_resync);
				} else {
					json_object_object_add(o, "dirty_bytes", NULL);
				}
				json_object_object_add(o, "connected", json_object_new_boolean(true));
				peer_conn_free(c);
			} else {
				json_object_object_add(o, "state", json_object_new_string("Unknown"));
				json_object_object_add(o, "generation", NULL);
				json_object_object_add(o, "dirty_bytes", NULL);
				json_object_object_add(o, "connected", json_object_new_boolean(false));
				json_object_object_add(o, "error", json_object_new_string(err));
			}
			json_object_object_add(o, "last_resync", last);
		}
		json_object_array_add(nodes, o);
	}
	json_object_object_add(res, "nodes", nodes);
	return control_client_result(cli, res);
}

static bool req_bool(json_object *req, const char *key)
{
	json_object *v;

	return json_object_object_get_ex(req, key, &v) && json_object_get_boolean(v);
}

static bool req_names_has(json_object *req, const char *name)
{
	json_object *a;

	if (!json_object_object_get_ex(req, "nodes", &a) || !json_object_is_type(a, json_type_array) ||
	    json_object_array_length(a) == 0)
		return true;
	for (size_t i = 0; i < json_object_array_length(a); i++)
		if (!strcmp(json_object_get_string(json_object_array_get_idx(a, i)), name))
			return true;
	return false;
}

/* verify (write = false) and resync (write = true, unless dry_run). */
static int node_run_jobs(struct node *n, struct control_client *cli, json_object *req, bool write)
{
	const struct cluster_config *cfg = n->cfg;
	struct blockcmp_opts o = {.block_size = cfg->block_size};
	_cleanup_free_ struct hash128 *hashes = NULL;
	_cleanup_free_ struct job *jobs = NULL;
	struct tree_cache tc = {0};
	_cleanup_free_ unsigned char *pbitmap = NULL;
	struct hashtree *tree = NULL;
	pthread_mutex_t cli_lock = PTHREAD_MUTEX_INITIALIZER;
	uint64_t size = node_size(n), nb = DIV_ROUND_UP(size, cfg->block_size), max_rate, nl;
	uint32_t leaf = cfg->block_size;
	unsigned fanout = RESYNC_HASHTREE_FANOUT_DEFAULT;
	json_object *res, *arr, *v, *final = NULL;
	struct meta_info mi;
	size_t nj = 0, failed = 0;
	bool frozen = false, all = true, plan = req_bool(req, "plan"), any_full = false;
	/* A client that shows no ranges may say so: thousands of scattered
	 * ranges are most of a reply's bytes. */
	bool no_ranges = req_bool(req, "no_ranges");
	size_t n_quick = 0;
	size_t bitmap_size = (size_t)DIV_ROUND_UP(nb, 8);
	struct meta_uuid base;
	char u[40];
	int r;

	if (cfg->n_nodes < 2)
		return control_client_error(cli, "refused: cluster '%s' has one node; a resync needs two or more",
					    cfg->name), 0;
	if (!cfg->primary)
		return control_client_error(cli, "refused: cluster '%s' has no primary (set 'primary' in [cluster])",
					    cfg->name), 0;
	if (!n->is_primary)
		return node_forward(n, cli, req);
	max_rate = cfg->max_rate;
	if (json_object_object_get_ex(req, "max_rate", &v))
		max_rate = (uint64_t)json_object_get_uint64(v);
	if (req_bool(req, "dry_run"))
		write = false;
	/* The named nodes must exist and be secondaries. */
	if (json_object_object_get_ex(req, "nodes", &v) && json_object_is_type(v, json_type_array)) {
		for (size_t i = 0; i < json_object_array_length(v); i++) {
			const char *s = json_object_get_string(json_object_array_get_idx(v, i));
			const struct node_config *nc = cluster_config_node(cfg, s ? s : "");

			if (!nc || nc == n->self)
				return control_client_error(cli, "refused: '%s' is not a secondary of cluster '%s'",
							    s ? s : "", cfg->name), 0;
		}
	}
	pthread_mutex_lock(&n->lock);
	if (n->resync_running) {
		pthread_mutex_unlock(&n->lock);
		return control_client_error(cli, "refused: a resync or verify is already running"), 0;
	}
	n->resync_running = true;
	pthread_mutex_unlock(&n->lock);
	atomic_store(&n->cancel, false);
	ratectl_reset(&n->rate, max_rate);

	jobs = calloc(cfg->n_nodes, sizeof(*jobs));
	if (!jobs) {
		r = -ENOMEM;
		goto out;
	}
	if (write) {
		/* The primary's image stays still while it is read for the
		 * secondaries: writes wait at the fence until the commit. */
		r = fusefs_fence_freeze(n->fs, FUSEFS_FENCE_WAIT);
		if (r < 0)
			goto out;
		frozen = true;
	}
	meta_info_get(node_meta(n), &mi);
	pthread_mutex_lock(&n->lock);
	base = n->base;
	pthread_mutex_unlock(&n->lock);

	/* Phase one: every chosen secondary's hello and status, in parallel. */
	for (size_t i = 0; i < cfg->n_nodes; i++) {
		const struct node_config *nc = &cfg->nodes[i];
		struct job *j;

		if (nc == n->self)
			continue;
		if (!req_names_has(req, nc->name)) {
			all = false;
			continue;
		}
		j = &jobs[nj++];
		j->n = n;
		j->peer = nc;
		j->cli = cli;
		j->cli_lock = &cli_lock;
		j->write = write;
		j->max_rate = max_rate;
		j->gen = mi.generation;
		j->bitmap_size = bitmap_size;
		j->started = !pthread_create(&j->t, NULL, job_open_thread, j);
		if (!j->started) {
			j->r = -EAGAIN;
			snprintf(j->err, sizeof(j->err), "cannot start a thread");
			snprintf(j->state, sizeof(j->state), "Unknown");
		}
	}
	for (size_t i = 0; i < nj; i++)
		if (jobs[i].started)
			pthread_join(jobs[i].t, NULL);

	/* The way for each: quick when its generation is the primary's
	 * current one or the bitmap's base and both bitmaps are trusted
	 * (the verify command itself always compares). */
	for (size_t i = 0; i < nj; i++) {
		struct job *j = &jobs[i];
		struct meta_uuid g;
		bool trusted;

		if (!j->opened)
			continue;
		memcpy(g.b, j->hello.generation.b, 16);
		trusted = j->hello.flags & WIRE_HELLO_BITMAP_TRUSTED;
		j->diverged = trusted && j->status.dirty_bytes > 0 &&
			      j->hello.state != WIRE_STATE_INCONSISTENT;
		if (j->diverged)
			/* Seen again at every plan and verify: for the event
			 * stream, not a notification (the secondary sent that
			 * when it turned Diverged). */
			event_publish_state(n->bus, j->peer->name, wire_state_name(j->hello.state),
					    "Diverged", true, "it holds writes that the primary lacks");
		j->resume = j->hello.state == WIRE_STATE_INCONSISTENT &&
			    (j->status.flags & WIRE_STATUS_CHECKPOINT) &&
			    !memcmp(j->status.checkpoint_id.b, mi.generation.b, 16);
		if ((write || plan) && mi.bitmap_trusted && trusted &&
		    j->hello.state != WIRE_STATE_INCONSISTENT && !meta_uuid_is_null(&g) &&
		    (!memcmp(g.b, mi.generation.b, 16) ||
		     (!meta_uuid_is_null(&base) && !memcmp(g.b, base.b, 16))))
			j->mode = JOB_QUICK, n_quick++;
		else
			any_full = true;
	}
	/* The tree's leaves: pages (or what keeps a large volume's tree
	 * small) when every secondary to compare can name them, blocks
	 * otherwise; with page leaves a smaller fanout keeps the hashes
	 * asked for near the scattered pages that differ. */
	leaf = wire_tree_leaf(size, cfg->block_size);
	for (size_t i = 0; i < nj; i++)
		if (jobs[i].opened && jobs[i].mode == JOB_FULL &&
		    !(jobs[i].features & WIRE_FEATURE_FINE_LEAVES))
			leaf = cfg->block_size;
	if (leaf < cfg->block_size)
		fanout = NODE_FINE_FANOUT;
	nl = DIV_ROUND_UP(size, leaf);
	o.block_size = leaf;
	for (size_t i = 0; i < nj; i++) {
		jobs[i].leaf = leaf;
		jobs[i].fanout = fanout;
	}
	/* One seed for the tree and for the page hashes of every job. */
	r = hash_seed_random(&o.seed);
	if (r < 0)
		goto out;
	if (any_full && tree_cache_take(n, 0, fanout, leaf, &tc)) {
		/* The plan's tree of this unchanged image, and its seed: each
		 * secondary finds its own tree of that seed in its cache. */
		hashes = TAKE_PTR(tc.hashes);
		tree = TAKE_PTR(tc.tree);
		o.seed = tc.seed;
		for (size_t i = 0; nl && i < nj; i++)
			job_prefetch(&jobs[i], o.seed);
	} else if (any_full) {
		tc.built = node_image_still(n, &tc.id) ? now_usec() : 0;
		hashes = calloc(nl ? nl : 1, sizeof(*hashes));
		if (!hashes) {
			r = -ENOMEM;
			goto out;
		}
		/* Each secondary hashes its volume while this one hashes its
		 * own: a first request (one leaf) makes it build its tree now,
		 * its answer is read at the start of the walk. */
		for (size_t i = 0; nl && i < nj; i++)
			job_prefetch(&jobs[i], o.seed);
		if (size) {
			r = blockcmp_hash_volume(fusefs_volume(n->fs), 0, size, &o, hashes);
			if (r < 0) {
				control_client_error(cli, "cannot read the primary's volume '%s': %s",
						     n->self->volume, strerror(-r));
				r = 0;
				goto out;
			}
		}
		r = hashtree_new(hashes, nl, fanout, o.seed, &tree);
		if (r < 0)
			goto out;
	}
	if (n_quick) {
		long long got;

		pbitmap = calloc(1, bitmap_size ? bitmap_size : 1);
		if (!pbitmap) {
			r = -ENOMEM;
			goto out;
		}
		got = meta_bitmap_read(node_meta(n), pbitmap, bitmap_size);
		if (got < 0) {
			r = (int)got;
			goto out;
		}
	}

	/* Phase two: compare and transfer, in parallel. */
	for (size_t i = 0; i < nj; i++) {
		struct job *j = &jobs[i];

		j->started = false;
		if (!j->opened)
			continue;
		j->tree = tree;
		j->seed = o.seed;
		j->pbitmap = pbitmap;
		if (write)
			event_publish_started(n->bus, j->peer->name, j->state,
					      meta_uuid_format(&mi.generation, u, sizeof(u)));
		j->started = !pthread_create(&j->t, NULL, job_thread, j);
		if (!j->started) {
			j->r = -EAGAIN;
			snprintf(j->err, sizeof(j->err), "cannot start a thread");
		}
	}
	for (size_t i = 0; i < nj; i++)
		if (jobs[i].started)
			pthread_join(jobs[i].t, NULL);

	res = json_object_new_object();
	arr = json_object_new_array();
	for (size_t i = 0; i < nj; i++) {
		struct job *j = &jobs[i];
		json_object *x = json_object_new_object();
		const char *result = j->r < 0 ? (j->r == -ECANCELED ? "cancelled" : "failed")
				     : write  ? "resynced"
				     : j->differing_bytes ? "differs"
							  : "identical";
		bool trusted = j->hello.flags & WIRE_HELLO_BITMAP_TRUSTED;

		if (j->r < 0)
			failed++;
		json_object_object_add(x, "name", json_object_new_string(j->peer->name));
		json_object_object_add(x, "result", json_object_new_string(result));
		json_object_object_add(x, "state", json_object_new_string(j->state));
		json_object_object_add(x, "mode",
				       json_object_new_string(j->mode == JOB_QUICK ? "quick" : "full"));
		json_object_object_add(x, "differing_blocks", json_object_new_uint64(j->differing_blocks));
		json_object_object_add(x, "differing_bytes", json_object_new_uint64(j->differing_bytes));
		/* The bytes it holds that the primary lacks: its writes since
		 * its last commit, when its bitmap can say. */
		json_object_object_add(x, "lacking_bytes", j->opened && trusted
				       ? json_object_new_uint64(j->status.dirty_bytes) : NULL);
		json_object_object_add(x, "resume_offset", j->resume
				       ? json_object_new_uint64(j->status.checkpoint_off) : NULL);
		if (!no_ranges)
			json_object_object_add(x, "ranges", ranges_json(&j->ranges));
		json_object_object_add(x, "bytes_compared", json_object_new_uint64(j->bytes_compared));
		json_object_object_add(x, "bytes_read",
				       json_object_new_uint64(j->bytes_read + (j->bytes_compared ? size : 0)));
		json_object_object_add(x, "bytes_sent", json_object_new_uint64(j->bytes_sent));
		json_object_object_add(x, "bytes_written", json_object_new_uint64(j->bytes_written));
		json_object_object_add(x, "seconds", json_object_new_double(j->seconds));
		if (j->r < 0)
			json_object_object_add(x, "error", json_object_new_string(j->err));
		json_object_array_add(arr, x);
		if (write)
			event_publish_end(n->bus, j->peer->name, j->r, j->state, j->bytes_compared,
					  j->bytes_sent, j->seconds, j->err);
	}
	if (write && !failed && all) {
		/* Every secondary has every block: the primary's marks may go,
		 * the generation they share becomes the bitmap's base, and
		 * the primary's later writes count under a new generation. */
		struct meta_uuid next;

		/* The base first: a crash before the metadata's update
		 * leaves the bits set under the same generation, which a
		 * quick resync still covers. */
		pthread_mutex_lock(&n->lock);
		n->base = mi.generation;
		r = node_state_save_locked(n);
		pthread_mutex_unlock(&n->lock);
		if (r >= 0)
			r = meta_uuid_random(&next);
		if (r >= 0)
			r = meta_resync_commit(node_meta(n), &next, false);
		if (r < 0)
			logf_("cannot start a new generation for '%s': %s", n->self->volume,
			      strerror(-r));
	}
	if (write && !failed)
		node_last_resync_set(n);
	json_object_object_add(res, "cluster", json_object_new_string(cfg->name));
	json_object_object_add(res, "primary", json_object_new_string(n->self->name));
	json_object_object_add(res, "generation",
			       json_object_new_string(meta_uuid_format(&mi.generation, u, sizeof(u))));
	json_object_object_add(res, "nodes", arr);
	if (write)
		logf_("resync of cluster '%s' finished: %zu of %zu secondaries failed", cfg->name,
		      failed, nj);
	if (write)
		event_publish_done(n->bus, nj, meta_uuid_format(&mi.generation, u, sizeof(u)));
	/* Sent last, once this run let go of everything: a client may
	 * start the next run the moment it reads the result. */
	final = res;
	r = 0;
out:
	for (size_t i = 0; jobs && i < nj; i++) {
		peer_conn_free(jobs[i].c);
		free(jobs[i].buf);
		rangelist_release(&jobs[i].ranges);
	}
	if (tree && tc.built) {
		/* This volume is not written by its own resync: a resync
		 * right after its plan reuses the tree. */
		tc.hashes = TAKE_PTR(hashes);
		tc.tree = TAKE_PTR(tree);
		tc.seed = o.seed;
		tc.fanout = fanout;
		tc.leaf = leaf;
		tree_cache_put(n, &tc);
	}
	hashtree_free(tree);
	if (frozen)
		fusefs_fence_thaw(n->fs);
	pthread_mutex_lock(&n->lock);
	n->resync_running = false;
	pthread_mutex_unlock(&n->lock);
	if (final)
		r = control_client_result(cli, final);
	return r;
}

static int cmd_verify(void *userdata, struct control_client *cli, json_object *req)
{
	return node_run_jobs(userdata, cli, req, false);
}

static int cmd_resync(void *userdata, struct control_client *cli, json_object *req)
{
	return node_run_jobs(userdata, cli, req, true);
}

static int cmd_cancel(void *userdata, struct control_client *cli, json_object *req)
{
	struct node *n = userdata;
	bool running;

	if (!n->is_primary && n->cfg->primary)
		return node_forward(n, cli, req);
	pthread_mutex_lock(&n->lock);
	running = n->resync_running;
	pthread_mutex_unlock(&n->lock);
	if (running)
		atomic_store(&n->cancel, true);
	json_object *o = json_object_new_object();

	json_object_object_add(o, "cancelled", json_object_new_boolean(running));
	return control_client_result(cli, o);
}

static int cmd_events(void *userdata, struct control_client *cli, json_object *req)
{
	return events_cmd_stream(((struct node *)userdata)->bus, cli, req);
}

/* pause, resume, rate: the running resync's pace (ratectl.h). */
static int cmd_pace(void *userdata, struct control_client *cli, json_object *req)
{
	struct node *n = userdata;
	bool running;

	if (!n->is_primary && n->cfg->primary)
		return node_forward(n, cli, req);
	pthread_mutex_lock(&n->lock);
	running = n->resync_running;
	pthread_mutex_unlock(&n->lock);
	return ratectl_cmd(&n->rate, running, cli, req);
}

/* The fields each command accepts (checked by the control socket before
 * the handler runs). verify and resync read the same ones
 * (node_run_jobs()); a resync erases unless it is a dry run, and then
 * also carries "confirm": "<cluster name>". */
static const struct control_field jobs_fields[] = {
	{"nodes", CONTROL_FIELD_STRINGS, 0},
	{"plan", CONTROL_FIELD_BOOL, 0},
	{"no_ranges", CONTROL_FIELD_BOOL, 0},
	{"dry_run", CONTROL_FIELD_BOOL, CONTROL_FIELD_DRY_RUN},
	{"max_rate", CONTROL_FIELD_UINT64, 0},
	{NULL},
};
static const struct control_field rate_fields[] = {
	{"rate", CONTROL_FIELD_UINT64, CONTROL_FIELD_REQUIRED},
	{NULL},
};

static const struct control_command node_commands[] = {
	{"status", cmd_status, NULL, 0},
	{"verify", cmd_verify, jobs_fields, 0},
	{"resync", cmd_resync, jobs_fields, CONTROL_CMD_ERASES},
	{"cancel", cmd_cancel, NULL, 0},
	{"events", cmd_events, NULL, 0},
	{"pause", cmd_pace, NULL, 0},
	{"resume", cmd_pace, NULL, 0},
	{"rate", cmd_pace, rate_fields, 0},
};

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
		logf_("'%s' has no node '%s'", cfg->path, name);
		r = -EINVAL;
		goto fail;
	}
	n->is_primary = cfg->primary && !strcmp(cfg->primary, name);
	if (!n->self->mount) {
		logf_("%s:%u: node '%s' has no 'mount'", cfg->path, n->self->line, name);
		r = -EINVAL;
		goto fail;
	}
	if (cfg->insecure) {
		logf_("insecure = true in '%s': peer traffic is plaintext (tests and benchmarks only)",
		      cfg->path);
	} else {
		r = secret_load(cfg->secret_file, err, sizeof(err), &n->secret);
		if (r < 0) {
			logf_("%s", err);
			goto fail;
		}
	}
	r = peer_ctx_new(cfg, n->secret, &n->ctx);
	if (r < 0) {
		logf_("cannot set up the peer transport: %s", strerror(-r));
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
		logf_("cannot detach the stale mount '%s': %s", n->self->mount, strerror(-r));
		goto fail;
	}
	r = mkdir_p(n->self->mount);
	if (r < 0) {
		logf_("cannot create '%s': %s", n->self->mount, strerror(-r));
		goto fail;
	}
	fo.image = n->self->volume;
	fo.mountpoint = n->self->mount;
	fo.meta.block_size = cfg->block_size;
	r = fusefs_new(&fo, &n->fs);
	if (r == -EBUSY) {
		logf_("'%s' is in use by another writer (resyncfs, resyncd or resync-diff)",
		      n->self->volume);
		goto fail;
	}
	if (r < 0) {
		logf_("cannot serve '%s' at '%s': %s", n->self->volume, n->self->mount, strerror(-r));
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
				logf_("cannot start a generation for '%s': %s", n->self->volume,
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
		logf_("cannot serve '%s': %s", n->self->mount, strerror(-r));
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
				logf_("cannot serve metrics at '%s': %s", n->self->metrics, strerror(-r));
				goto fail;
			}
		}
	}
	r = peer_listener_new(n->ctx, n->self->host, n->self->port, err, sizeof(err), &n->listener);
	if (r < 0) {
		logf_("%s", err);
		goto fail;
	}
	r = pthread_create(&n->accept_thread, NULL, accept_thread, n);
	if (r) {
		r = -r;
		goto fail;
	}
	n->accept_started = true;
	if (n->self->control) {
		r = control_server_new(n->self->control, cfg->name, node_commands,
				       ARRAY_SIZE(node_commands), n, &n->ctl);
		if (r < 0) {
			logf_("cannot listen on '%s': %s", n->self->control, strerror(-r));
			goto fail;
		}
	}
	logf_("node '%s' of cluster '%s' (%s) serving '%s' at '%s', peers at '%s'", name,
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
	deadline = now_usec() + NODE_STOP_WAIT_MS * 1000ull;
	while (atomic_load(&n->sessions) > 0 && now_usec() < deadline)
		usleep(10000);
	if (atomic_load(&n->sessions) > 0) {
		/* A session still blocked on its peer: leave the volume to the
		 * process's exit rather than free it under the session. */
		logf_("a peer session did not end in time; metadata left unclean");
		n->fs = NULL;
		return -EBUSY;
	}
	if (n->fs) {
		tree_file_save(n);
		r = fusefs_stop(n->fs);
		if (r < 0)
			logf_("cannot leave clean metadata for '%s': %s", n->self->volume,
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
