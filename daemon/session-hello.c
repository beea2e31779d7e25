/* The secondary's session, its hellos (session.c's room for the rest):
 * the peer's first hello checked and answered, and a HELLO again on a
 * session (WIRE_FEATURE_REHELLO), which starts it over as after the
 * first: a plan's connection that the primary kept for the resync that
 * follows it (plan-keep.c). What the primary was told here (split brain,
 * a secondary) is checked again at the first write, under the fence
 * (session_write_check()), and a newer session of the primary that may
 * rewrite this volume ends the older ones (session_supersede()). */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "node-int.h"
#include "resync/limits.h"
#include "resync/macro.h"

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
			log_warning("this volume has writes the primary '%s' lacks: state Diverged",
			      s->peer);
			/* The transition is announced once, here, by the node
			 * that turned Diverged. */
			event_publish_state(s->n->bus, s->n->self->name, mi.state,
					    META_STATE_DIVERGED, false,
					    "it holds writes that the primary lacks");
		}
	}
}

/* The session no longer counts against NODE_UNAUTH_MAX. */
void session_authed(struct session *s)
{
	struct node *n = s->n;

	pthread_mutex_lock(&n->sessions_lock);
	if (s->unauth) {
		s->unauth = false;
		n->sessions_unauth--;
	}
	pthread_mutex_unlock(&n->sessions_lock);
}

/* Whether o is an older session than s that said it may rewrite this
 * volume (a total order: two never wait for each other). */
static bool session_older_rewriter(const struct session *o, const struct session *s)
{
	if (o == s || !o->rewrite_since)
		return false;
	return o->rewrite_since < s->rewrite_since ||
	       (o->rewrite_since == s->rewrite_since && (uintptr_t)o < (uintptr_t)s);
}

/* A session of the primary that may rewrite this volume (GROW in its
 * hello) supersedes every older one: the primary runs one job a
 * secondary, so it gave those up. One may still hold the volume,
 * though: its connection lost in a partition (it waits for frames until
 * session_timeout), or its frames still buffered to apply after the
 * primary fell back from a kept connection that broke behind its early
 * data (job_open_thread()); this session's first write would then meet
 * EBUSY, and the volume stay Inconsistent until the next resync. Each is
 * ended (its connection shut down; it applies no frame more) and waited
 * for, at most NODE_SUPERSEDE_WAIT_MS, before this hello is answered:
 * the status and the walk then see the volume as it left it. Returns 0,
 * or -EBUSY when one has not ended in time (s->why says so). */
static int session_supersede(struct session *s)
{
	struct node *n = s->n;
	uint64_t t0 = clock_usec(), until = t0 + NODE_SUPERSEDE_WAIT_MS * 1000ull;
	size_t ended = 0, older;

	pthread_mutex_lock(&n->sessions_lock);
	if (!s->rewrite_since)
		s->rewrite_since = t0;
	for (;;) {
		older = 0;
		for (struct session *o = n->sessions; o; o = o->next) {
			if (!session_older_rewriter(o, s))
				continue;
			older++;
			if (!atomic_exchange(&o->superseded, true)) {
				ended++;
				if (o->c)
					peer_conn_shutdown(o->c);
			}
		}
		if (!older || clock_usec() >= until || atomic_load(&n->stopping))
			break;
		node_sessions_wait(n); /* each session's end broadcasts */
	}
	pthread_mutex_unlock(&n->sessions_lock);
	if (older) {
		snprintf(s->why, sizeof(s->why),
			 "an earlier session of '%s' still holds '%s' after %u ms", s->peer,
			 n->self->name, (unsigned)NODE_SUPERSEDE_WAIT_MS);
		log_warning("refused '%s': %s", s->peer, s->why);
		return -EBUSY;
	}
	if (ended)
		log_info("'%s' connected anew to rewrite this volume: %zu earlier session%s of it "
			 "ended first (%.3f s)",
			 s->peer, ended, ended == 1 ? "" : "s", (double)(clock_usec() - t0) / 1e6);
	return 0;
}

/* A peer's hello h, checked (a smaller file grows to its primary's size
 * here), then this node's. Returns 0 when the session may go on;
 * anything else was refused and said. */
static int session_hello_answer(struct session *s, const struct wire_hello *hp)
{
	struct node *n = s->n;
	struct wire_hello h = *hp, mine;
	struct wire_text why;
	size_t len;
	int r;

	snprintf(s->peer, sizeof(s->peer), "%s", h.node);
	s->features = h.features & node_features();
	if (session_volume_check(s) < 0) {
		send_text(s->c, WIRE_REFUSE, WIRE_REASON_IO, s->why);
		return -ESTALE;
	}
	r = node_hello_check(n, &h, &why);
	if (r < 0 && why.code == WIRE_REASON_VOLUME_SIZE && node_grow_to_primary(n, &h))
		r = node_hello_check(n, &h, &why);
	if (r < 0) {
		log_warning("refused '%s': %s", h.node, why.text);
		send_text(s->c, WIRE_REFUSE, why.code, why.text);
		return r;
	}
	s->from_primary = (h.flags & WIRE_HELLO_PRIMARY) && cluster_config_primary_is(n->cfg, h.node) && !n->is_primary;
	if ((h.flags & WIRE_HELLO_DATA_FOLLOWS) && !s->from_primary) {
		/* Its data frames would be refused one by one: refused here. */
		log_warning("refused '%s': data follows its hello, and it is not this node's primary",
			    h.node);
		send_text(s->c, WIRE_REFUSE, WIRE_REASON_NODE,
			  "data follows a hello from a node that is not this node's primary");
		return -EPERM;
	}
	if (s->from_primary) {
		struct meta_info mi;

		char sb[RESYNC_WIRE_TEXT_MAX];

		if (h.features & WIRE_FEATURE_GROW) {
			r = session_supersede(s);
			if (r < 0) {
				send_text(s->c, WIRE_REFUSE, WIRE_REASON_BUSY, s->why);
				return r;
			}
		}
		s->primary_hello = h;
		s->data_follows = h.flags & WIRE_HELLO_DATA_FOLLOWS;
		memcpy(s->target.b, h.generation.b, 16);
		session_state_note(s);
		/* Split brain, seen from this side: announced once per
		 * generation of the primary (the primary refuses to resync
		 * this node unless forced). With data right behind the hello
		 * (WIRE_HELLO_DATA_FOLLOWS), refused here: the primary would
		 * refuse that resync only once it read this node's status,
		 * after the data. It asks again without data, and decides. */
		s->split_told = node_peer_split_brain(n, &h, -1, sb, sizeof(sb));
		if (s->split_told && s->data_follows) {
			log_warning("refused '%s' sending data behind its hello: %s", h.node, sb);
			send_text(s->c, WIRE_REFUSE, WIRE_REASON_OTHER, sb);
			return -EPERM;
		}
		/* undo = diverged: decided here, from this node's own state. */
		meta_info_get(node_meta(n), &mi);
		s->diverged = mi.state == META_STATE_DIVERGED;
		s->undo_mode = n->cfg->undo;
		FAILPOINT("secondary-hello");
	} else if ((h.flags & WIRE_HELLO_PRIMARY) && n->is_primary) {
		char sb[RESYNC_WIRE_TEXT_MAX];

		/* Two primaries (a configuration changed on one node only):
		 * said here, and on the other side from this node's hello. */
		node_peer_split_brain(n, &h, -1, sb, sizeof(sb));
	}
	node_hello_make(n, &mine);
	r = wire_hello_encode(&mine, s->out, RESYNC_WIRE_FRAME_MAX, &len);
	if (r >= 0)
		r = peer_conn_send_frame(s->c, WIRE_HELLO_ACK, s->out, len);
	return r;
}

/* The hellos: the peer's first, then this node's (session_hello_answer()).
 * Returns 0 when the session may go on; anything else was refused and
 * said. */
int session_hello(struct session *s)
{
	struct wire_hello h;
	uint16_t type;
	size_t len;
	int r;

	/* The hello comes right after the handshake: the connect deadline
	 * covers it too, so that a silent peer leaves the count of the
	 * unauthenticated early (plaintext clusters have no handshake). */
	peer_conn_set_timeout(s->c, PEER_TIMEOUT_CONNECT_MS);
	r = peer_conn_recv_frame(s->c, &type, s->in, RESYNC_WIRE_FRAME_MAX, &len);
	session_authed(s);
	peer_conn_set_timeout(s->c, PEER_TIMEOUT_IO_MS);
	if (r < 0) {
		log_warning("session with %s ended before its hello: %s", peer_conn_remote(s->c),
			    peer_conn_error(s->c));
		return r;
	}
	if (type != WIRE_HELLO || wire_hello_decode(s->in, len, &h) < 0) {
		log_warning("refused %s: its first message is not a valid hello", peer_conn_remote(s->c));
		send_text(s->c, WIRE_REFUSE, WIRE_REASON_MESSAGE, "the first message must be HELLO");
		return -EBADMSG;
	}
	return session_hello_answer(s, &h);
}

/* What a request learnt, let go before the next one on this session: the
 * tree back to the node's cache (whence session_tree() takes it again
 * only while the image is unchanged), the bitmap's snapshot, the write
 * state of a session that never wrote. */
static void session_reset(struct session *s)
{
	if (s->tree && s->built && !s->wrote) {
		struct tree_cache c = {s->hashes, s->tree, s->seed, s->fanout, s->leaf, s->id,
				       s->built};

		tree_cache_put(s->n, &c);
		s->hashes = NULL;
		s->tree = NULL;
	}
	hashtree_free(s->tree);
	s->tree = NULL;
	free(s->hashes);
	s->hashes = NULL;
	s->seed = 0;
	s->built = 0;
	free(s->bitmap);
	s->bitmap = NULL;
	s->bitmap_size = 0;
	s->diverged = false;
	s->undo = false;
	s->committed = false;
	s->proof_done = false;
	s->n_blocks = s->n_extents = 0;
	rangelist_release(&s->proof_written);
}

/* HELLO again (WIRE_FEATURE_REHELLO): a plan's connection, kept by the
 * primary for the resync that follows it. The session starts over as
 * after its first hello. Refused on a session that wrote (a resync's:
 * one resync a session) and from a peer that did not offer the feature,
 * as an unexpected message. Returns 0 to go on, SESSION_END after a
 * refusal (said), -errno. */
int session_rehello(struct session *s, size_t len)
{
	struct wire_hello h;
	int r;

	if (!(s->features & WIRE_FEATURE_REHELLO) || s->wrote || s->writing) {
		/* As for any type without a handler (session_step()). */
		log_warning("unexpected %s from '%s'", wire_type_name(WIRE_HELLO), s->peer);
		send_text(s->c, WIRE_ERROR, WIRE_REASON_MESSAGE, "unexpected message");
		return SESSION_END;
	}
	r = wire_hello_decode(s->in, len, &h);
	if (r < 0)
		return r;
	session_reset(s);
	/* A failure here ends the session with an ERROR, and what follows
	 * is taken off the wire unapplied (session_fail()). */
	FAILPOINT_RETURN("secondary-rehello");
	r = session_hello_answer(s, &h);
	if (r < 0 && (h.flags & WIRE_HELLO_DATA_FOLLOWS))
		/* Refused (said): the data behind the hello is read and
		 * dropped, never applied, so that the close does not reset
		 * the connection before the primary read why. */
		session_linger(s);
	return r < 0 ? SESSION_END : 0;
}

void session_status_told(struct session *s)
{
	char sb[RESYNC_WIRE_TEXT_MAX];

	/* Judged before the status reads its facts: a write landing
	 * meanwhile is then one the primary may not have been told of, and
	 * session_write_check() refuses rather than erases it. Behind a
	 * hello with data, the primary reads this STATUS after the data:
	 * the hello's verdict stands. */
	if (s->from_primary && !s->data_follows)
		s->split_told = node_peer_split_brain(s->n, &s->primary_hello, -1, sb, sizeof(sb));
}

int session_write_check(struct session *s)
{
	struct node *n = s->n;
	char sb[RESYNC_WIRE_TEXT_MAX];

	if (!s->from_primary)
		return 0;
	/* The primary may have changed since the hello (etcd's leader key,
	 * etcd-node.c): a COMMIT would be refused, but not the writes. */
	if (atomic_load(&n->is_primary) || !cluster_config_primary_is(n->cfg, s->peer)) {
		snprintf(s->why, sizeof(s->why),
			 "%s now: refused the writes of '%s', nothing written",
			 atomic_load(&n->is_primary) ? "this node acts as primary"
						     : "it is no longer the primary", s->peer);
		log_warning("%s", s->why);
		return -EPERM;
	}
	/* A split brain the primary judged (told at the hello or the
	 * status) is its decision: refused there, or forced. One that began
	 * after (a write landed on this node's mount since) it never saw. */
	if (s->split_told || !node_peer_split_brain(n, &s->primary_hello, -1, sb, sizeof(sb)))
		return 0;
	session_state_note(s);
	snprintf(s->why, sizeof(s->why), "refused the writes of '%s', nothing written: %.*s",
		 s->peer, (int)(sizeof(s->why) - 80 - RESYNC_NAME_MAX), sb);
	log_warning("%s", s->why);
	return -EPERM;
}
