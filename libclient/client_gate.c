/*
 * client_gate.c: libsidecard's calls on an agent's paid action, the path an
 * agent takes on every request: sc_check(), sc_check_batch() (many checks
 * pipelined on one connection) and sc_report() / sc_report_tokens().
 *
 * sc_check() and sc_report() are single round trips (sc_client_call_one(),
 * client.c). sc_check_batch() drives the socket itself, with the same
 * packing, reading and notification handling, to keep up to
 * SC_CHECK_BATCH_WINDOW requests in flight (CHECK BATCHES below).
 *
 * Threads: the calling thread, which owns the client for the call
 * (sidecard.h). Ownership: the caller's requests are read and its
 * decisions, settlements and codes written; nothing is kept after the call.
 */
#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>

#include "client_int.h"

/* ----- check ----- */

/* The check request for req into *r; SC_EINVAL (with the message) if it cannot be sent. */
static int check_request(sc_client *c, const sc_check_req *req, struct request *r)
{
	size_t i;

	if (req->action == NULL)
		return sc_client_fail(c, SC_EINVAL, "action: required");
	if (req->n_metadata > 0 && req->metadata == NULL)
		return sc_client_fail(c, SC_EINVAL, "metadata: %zu entries but no array",
		                   req->n_metadata);
	for (i = 0; i < req->n_metadata; i++)
		if (req->metadata[i].key == NULL || req->metadata[i].key[0] == '\0' ||
		    req->metadata[i].value == NULL)
			return sc_client_fail(c, SC_EINVAL,
			                   "metadata: entry %zu needs a key and a value", i);
	*r = (struct request){ .method = "check" };
	sc_client_arg_uint(r, "agent_id", req->agent_id);
	sc_client_arg_str(r, "action", req->action);
	sc_client_arg_int(r, "estimated_cost", req->estimated_cost);
	if (req->type != NULL)
		sc_client_arg_str(r, "type", req->type);
	if (req->idempotency_key != NULL)
		sc_client_arg_str(r, "idempotency_key", req->idempotency_key);
	if (req->task_id != NULL)
		sc_client_arg_str(r, "task_id", req->task_id);
	if (req->n_metadata > 0)
		sc_client_arg_add(r, (struct arg){ .key = "metadata", .kind = ARG_META,
		                                .base = req->metadata, .count = req->n_metadata });
	return 0;
}

int sc_check(sc_client *c, const sc_check_req *req, sc_decision *out)
{
	struct request r;
	int rc = check_request(c, req, &r);

	return rc != 0 ? rc : sc_client_call_one(c, &r, sc_client_decision_table, out, sizeof(*out));
}

/* ----- check batches ----- */

/*
 * CHECK BATCHES. Request i carries msgid base + i (uint32 arithmetic, as
 * msgids wrap); the daemon answers in request order, so the answer due next
 * is always that of the oldest request in flight, and anything else is a
 * broken stream. Requests are packed into c->sbuf a window at a time, and
 * the socket is driven with poll() for reading and writing at once: while a
 * window is being written the answers already arriving are read, so neither
 * side can block on a full socket buffer whatever the requests' sizes.
 * rcs[i] is BATCH_PENDING until request i is answered or refused.
 */
#define BATCH_PENDING 1

struct batch {
	const sc_check_req *reqs;
	size_t n;
	sc_decision *outs;
	int *rcs;
	uint32_t base;   /* msgid of request 0 */
	size_t packed;   /* requests 0..packed-1 are packed or refused */
	size_t next;     /* the oldest request not answered yet */
	size_t inflight; /* packed and not answered */
	size_t off;      /* bytes of c->sbuf the kernel has taken */
};

static void batch_skip_answered(struct batch *b)
{
	while (b->next < b->packed && b->rcs[b->next] != BATCH_PENDING)
		b->next++;
}

/* Packs requests into c->sbuf until the window is full. */
static void batch_fill(sc_client *c, struct batch *b)
{
	struct writer w;
	struct request r;
	size_t before;
	int rc;

	msgpack_sbuffer_clear(&c->sbuf);
	b->off = 0;
	while (b->packed < b->n && b->inflight < SC_CHECK_BATCH_WINDOW) {
		size_t i = b->packed++;

		if ((rc = check_request(c, &b->reqs[i], &r)) != 0) {
			b->rcs[i] = rc;
			continue;
		}
		before = c->sbuf.size;
		w.sb = &c->sbuf;
		w.failed = 0;
		sc_client_put_request(&w, b->base + (uint32_t)i, &r);
		if (w.failed) {
			c->sbuf.size = before; /* drop the partial request */
			b->rcs[i] = sc_client_fail(c, -ENOMEM, "check: %s", sc_strerror(-ENOMEM));
			continue;
		}
		b->inflight++;
	}
	batch_skip_answered(b);
}

/* Handles the message in c->msg: the answer to b->next, or a notification. */
static int batch_take(sc_client *c, struct batch *b)
{
	const msgpack_object *m = &c->msg.data;
	size_t i = b->next;

	if (m->type != MSGPACK_OBJECT_ARRAY || m->via.array.size < 3 ||
	    m->via.array.ptr[0].type != MSGPACK_OBJECT_POSITIVE_INTEGER)
		return sc_client_broken(c, SC_EPROTO, "malformed message from the daemon");
	if (m->via.array.ptr[0].via.u64 == 2)
		return sc_client_take_notification(c, m);
	if (m->via.array.size != 4 || m->via.array.ptr[0].via.u64 != 1 ||
	    m->via.array.ptr[1].type != MSGPACK_OBJECT_POSITIVE_INTEGER)
		return sc_client_broken(c, SC_EPROTO, "malformed response from the daemon");
	if (b->inflight == 0 || m->via.array.ptr[1].via.u64 != (uint32_t)(b->base + (uint32_t)i))
		return sc_client_broken(c, SC_EPROTO, "response to another request");
	if (m->via.array.ptr[2].type != MSGPACK_OBJECT_NIL)
		b->rcs[i] = sc_client_daemon_error(c, &m->via.array.ptr[2]);
	else
		b->rcs[i] = sc_client_decode_one(c, &m->via.array.ptr[3], sc_client_decision_table,
		                              &b->outs[i], sizeof(b->outs[i]));
	b->inflight--;
	b->next++;
	batch_skip_answered(b);
	return 0;
}

/* Handles every whole message buffered; *took counts them. */
static int batch_drain(sc_client *c, struct batch *b, int *took)
{
	int rc;

	while ((rc = sc_client_next_buffered(c)) > 0) {
		if ((rc = batch_take(c, b)) != 0)
			return rc;
		++*took;
	}
	return rc;
}

/* Waits until the socket can take bytes or has some, and moves them. */
static int batch_io(sc_client *c, struct batch *b)
{
	int want_write = b->off < c->sbuf.size, took = 0, rc;
	struct pollfd p = { .fd = c->fd, .events = POLLIN | (want_write ? POLLOUT : 0) };
	size_t room;
	ssize_t n;

	if ((rc = batch_drain(c, b, &took)) != 0 || took > 0)
		return rc;
	while (poll(&p, 1, -1) < 0)
		if (errno != EINTR)
			return sc_client_broken(c, -errno, "wait for the daemon");
	if (want_write && (p.revents & (POLLOUT | POLLERR))) {
		n = send(c->fd, c->sbuf.data + b->off, c->sbuf.size - b->off,
		         MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n >= 0)
			b->off += (size_t)n;
		else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
			return sc_client_broken(c, -errno, "write to the daemon");
	}
	if (!(p.revents & (POLLIN | POLLHUP | POLLERR)))
		return 0;
	if ((rc = sc_client_read_room(c, &room)) != 0)
		return rc;
	n = recv(c->fd, msgpack_unpacker_buffer(&c->unp), room, MSG_DONTWAIT);
	if (n == 0)
		return sc_client_broken(c, SC_ECLOSED, "the daemon closed the connection");
	if (n < 0)
		return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR
		               ? 0
		               : sc_client_broken(c, -errno, "read from the daemon");
	msgpack_unpacker_buffer_consumed(&c->unp, (size_t)n);
	return batch_drain(c, b, &took);
}

int sc_check_batch(sc_client *c, const sc_check_req *reqs, size_t n, sc_decision *outs, int *rcs)
{
	struct batch b = { .reqs = reqs, .n = n, .outs = outs, .rcs = rcs };
	size_t i;
	int rc = 0;

	if (n > 0 && (reqs == NULL || outs == NULL || rcs == NULL))
		return sc_client_fail(c, SC_EINVAL, "check batch: reqs, outs and rcs are required");
	c->error[0] = '\0';
	for (i = 0; i < n; i++)
		rcs[i] = BATCH_PENDING;
	msgpack_sbuffer_clear(&c->sbuf); /* the last call's request is not to be sent again */
	b.base = c->msgid + 1;
	c->msgid += (uint32_t)n;
	while (b.next < n) {
		if (c->fd < 0) {
			rc = sc_client_fail(c, SC_ECLOSED, "the connection is closed");
			break;
		}
		/* Refill once half the window is answered, so that writes go out in bulk. */
		if (b.off == c->sbuf.size && b.packed < n && b.inflight <= SC_CHECK_BATCH_WINDOW / 2)
			batch_fill(c, &b);
		if (b.next == n)
			break;
		if ((rc = batch_io(c, &b)) != 0)
			break;
	}
	for (i = 0; rc != 0 && i < n; i++)
		if (rcs[i] == BATCH_PENDING)
			rcs[i] = rc;
	return rc;
}

/* ----- report ----- */

int sc_report(sc_client *c, uint64_t transaction_id, enum sc_outcome outcome, int has_actual,
              sc_micros actual_cost, sc_settlement *out)
{
	struct request rq = { .method = "report" }, *r = &rq;

	if ((unsigned)outcome > SC_OUTCOME_PARTIAL)
		return sc_client_fail(c, SC_EINVAL, "outcome: out of range");
	sc_client_arg_uint(r, "transaction_id", transaction_id);
	sc_client_arg_str(r, "outcome", sc_outcome_name(outcome));
	if (has_actual)
		sc_client_arg_int(r, "actual_cost", actual_cost);
	return sc_client_call_one(c, r, sc_client_settlement_table, out, sizeof(*out));
}

int sc_report_tokens(sc_client *c, uint64_t transaction_id, enum sc_outcome outcome,
                     const sc_tokens *t, sc_settlement *out)
{
	struct request rq = { .method = "report" }, *r = &rq;

	if ((unsigned)outcome > SC_OUTCOME_PARTIAL)
		return sc_client_fail(c, SC_EINVAL, "outcome: out of range");
	if (t == NULL || t->model == NULL)
		return sc_client_fail(c, SC_EINVAL, "model: required");
	sc_client_arg_uint(r, "transaction_id", transaction_id);
	sc_client_arg_str(r, "outcome", sc_outcome_name(outcome));
	sc_client_arg_str(r, "model", t->model);
	sc_client_arg_uint(r, "input_tokens", t->input_tokens);
	sc_client_arg_uint(r, "output_tokens", t->output_tokens);
	sc_client_arg_uint(r, "cached_input_tokens", t->cached_input_tokens);
	return sc_client_call_one(c, r, sc_client_settlement_table, out, sizeof(*out));
}
