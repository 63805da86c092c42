/*
 * dispatch_alerts.c: the alert methods (alerts.list, alerts.subscribe,
 * alerts.unsubscribe; PROTOCOL.md "Alerts") and the push of new alerts to
 * the connections that subscribed. None writes a ledger record: alerts are
 * derived from the other records (sidecard/engine/alerts.c), and a subscription is
 * a property of a connection, which a restart does not keep.
 *
 * DESIGN. A handler must not notify the connection it answers, and an
 * alert may be raised by a handler (on any worker) or by the expiry timer,
 * so alerts are not pushed where they are raised. The dispatcher remembers
 * the highest alert id it has pushed; dispatch_push_alerts, called by the
 * daemon on the main loop after every iteration (a uv_check handle), after
 * each expiry and when a worker's change raised one (alerts_raised wakes
 * the main loop), sends the newer ones to every subscriber in id order:
 * srv_notify delivers to a connection of the main loop at once and hands
 * the message to the worker serving any other. Each subscriber also
 * remembers the last alert id before it subscribed, so it receives exactly
 * the alerts its subscribe reply did not already cover. Subscribers are a
 * small array of connection ids: one is dropped when its connection closes
 * (dispatch_conn_closed in dispatch.c calls dispatch_alerts_forget) or a
 * push finds no such connection; one that presents a token in hello keeps
 * its subscription under its new role (dispatch_alerts_rebind, called by
 * the request path). A subscriber that does not read (its queue at the
 * server's max_outstanding) loses that notification, counted by the server
 * and shown in stats as alerts_dropped; it stays subscribed.
 *
 * Threads: the methods run in a handler and the hooks of dispatch.c
 * (dispatch_methods.h) are called under the commit lock; the push takes
 * it. Ownership: d->alerts is allocated by the first subscribe and
 * released by dispatch_alerts_free.
 */
#include <stdlib.h>
#include <string.h>

#include "call.h"
#include "dispatch_methods.h"

struct subscriber {
	uint64_t conn_id;
	uint64_t after; /* alerts up to this id predate the subscription */
	/* who subscribed: an agent gets only its own alerts, and a connection
	 * with a token (agent or reader) only while that token stands */
	struct access_peer peer;
};

struct dispatch_alerts {
	struct subscriber *v;
	size_t n, cap;
	uint64_t pushed; /* the highest alert id pushed (or passed over with no subscriber) */
	msgpack_sbuffer params;
};

static void pack_alert(struct call *c, const struct shm_alert *a)
{
	msgpack_packer *pk = c->pk;

	call_map(c, 10);
	proto_pack_key_u64(pk, "id", a->id);
	pack_key_opt_u64(pk, "agent_id", a->agent_id);
	proto_pack_key_u64(pk, "org_id", a->org_id);
	proto_pack_key_str(pk, "kind",
	                   sc_alert_kind_name((enum sc_alert_kind)(a->kind - SHM_ALERT_LOW_BALANCE)));
	proto_pack_key_str(pk, "severity", sc_severity_name((enum sc_severity)a->severity));
	proto_pack_key_i64(pk, "value", a->value);
	proto_pack_key_i64(pk, "threshold", a->threshold);
	pack_key_opt_u64(pk, "transaction_id", a->txn_id);
	proto_pack_key_i64(pk, "time", a->time);
	proto_pack_key_str(pk, "message", a->message);
}

static const void *alert_get(struct state *st, uint64_t id)
{
	return state_alert_by_id(st, id);
}

static int alert_keep(const void *rec, const struct ring_filter *f)
{
	const struct shm_alert *a = rec;

	return (!f->agent_id || a->agent_id == f->agent_id) && (!f->org_id || a->org_id == f->org_id) &&
	       (f->kind < 0 || a->kind == f->kind + SHM_ALERT_LOW_BALANCE) &&
	       (f->severity < 0 || a->severity == f->severity) && a->time >= f->since;
}

static void alert_pack(struct call *c, const void *rec)
{
	pack_alert(c, rec);
}

int m_alerts_list(struct call *c)
{
	const struct shm_header *h = c->m->hdr;
	const struct ring r = {h->next_alert_id, h->alert_cap, alert_get, alert_keep, alert_pack};
	struct ring_filter f = RING_FILTER_ANY;
	int64_t limit = 50;
	int present, rc;

	if ((rc = proto_arg_u64(c->a, "agent_id", 0, &f.agent_id, &present)) ||
	    (rc = proto_arg_u64(c->a, "org_id", 0, &f.org_id, &present)) ||
	    (rc = call_enum_arg(c, c->a, "kind", &sc_alert_kind_names, &f.kind, &present)) ||
	    (rc = call_enum_arg(c, c->a, "severity", &sc_severity_names, &f.severity, &present)) ||
	    (rc = proto_arg_int(c->a, "since", 0, 0, INT64_MAX, &f.since, &present)) ||
	    (rc = proto_arg_u64(c->a, "before", 0, &f.before, &present)) ||
	    (rc = proto_arg_int(c->a, "limit", 0, 1, 1000, &limit, NULL)))
		return rc;
	return list_ring(c, &r, &f, limit);
}

static void remove_at(struct dispatch_alerts *s, size_t i)
{
	s->v[i] = s->v[--s->n];
}

static size_t find(const struct dispatch_alerts *s, uint64_t conn_id)
{
	size_t i;

	for (i = 0; i < s->n && s->v[i].conn_id != conn_id; i++)
		;
	return i;
}

static int pack_subscribed(struct call *c, int yes, int with_last)
{
	msgpack_packer *pk = call_ok(c);

	call_map(c, with_last ? 2 : 1);
	proto_pack_key_bool(pk, "subscribed", yes);
	if (with_last)
		proto_pack_key_u64(pk, "last_alert_id", c->m->hdr->next_alert_id - 1);
	return 0;
}

int m_alerts_subscribe(struct call *c)
{
	struct dispatch *d = c->d;
	struct dispatch_alerts *s = d->alerts;
	uint64_t last = c->m->hdr->next_alert_id - 1;

	if (c->conn_id == 0)
		return call_fail(c, SC_EINVAL, "alerts.subscribe: only a connection can subscribe");
	if (!s) {
		if (!(s = calloc(1, sizeof(*s))))
			return call_fail(c, SC_EINTERNAL, "out of memory");
		msgpack_sbuffer_init(&s->params);
		d->alerts = s;
	}
	if (find(s, c->conn_id) == s->n) {
		if (s->n == s->cap) {
			size_t cap = s->cap ? 2 * s->cap : 16;
			struct subscriber *v = realloc(s->v, cap * sizeof(*v));

			if (!v)
				return call_fail(c, SC_EINTERNAL, "out of memory");
			s->v = v;
			s->cap = cap;
		}
		if (s->n == 0)
			s->pushed = last;
		s->v[s->n++] = (struct subscriber){c->conn_id, last, c->peer ? *c->peer : (struct access_peer){0}};
	}
	return pack_subscribed(c, 1, 1);
}

int m_alerts_unsubscribe(struct call *c)
{
	struct dispatch_alerts *s = c->d->alerts;
	size_t i;

	if (s && (i = find(s, c->conn_id)) < s->n)
		remove_at(s, i);
	return pack_subscribed(c, 0, 0);
}

/* Sends one packed [alert] to every subscriber that did not see it at subscribe. */
static void push_one(struct dispatch *d, struct dispatch_alerts *s, const struct shm_alert *a)
{
	for (size_t i = s->n; i-- > 0;) {
		const struct access_peer *p = &s->v[i].peer;
		int rc;

		if (a->id <= s->v[i].after)
			continue;
		/* a reader's token revoked ends its subscription as an agent's replaced one does */
		if (p->by_token && !call_peer_valid(d, p)) {
			remove_at(s, i);
			continue;
		}
		if (p->role == ACCESS_AGENT && a->agent_id != p->id)
			continue;
		rc = srv_notify(d->srv, s->v[i].conn_id, "alert", s->params.data, s->params.size);
		if (rc != 0 && rc != SC_ELIMIT)
			remove_at(s, i);
	}
}

void dispatch_alerts_rebind(struct dispatch *d, uint64_t conn_id, const struct access_peer *p)
{
	struct dispatch_alerts *s = d->alerts;
	size_t i;

	if (s && (i = find(s, conn_id)) < s->n)
		s->v[i].peer = *p;
}

int dispatch_alerts_pending(const struct dispatch *d)
{
	const struct dispatch_alerts *s = d->alerts;

	return s && s->n && state_shm(d->st)->hdr->next_alert_id - 1 > s->pushed;
}

void dispatch_alerts_forget(struct dispatch *d, uint64_t conn_id)
{
	struct dispatch_alerts *s = d->alerts;
	size_t i;

	if (s && (i = find(s, conn_id)) < s->n)
		remove_at(s, i);
}

/* Under the commit lock: the ring and the subscribers stay still while the push reads them. */
static void push_alerts(struct dispatch *d)
{
	struct dispatch_alerts *s = d->alerts;
	uint64_t next;

	if (!s)
		return;
	next = state_shm(d->st)->hdr->next_alert_id;
	for (uint64_t id = s->pushed + 1; id < next && s->n && d->srv; id++) {
		const struct shm_alert *a = state_alert_by_id(d->st, id);
		msgpack_packer pk;
		struct call c = {.d = d, .st = d->st, .m = state_shm(d->st), .pk = &pk};

		if (!a)
			continue;
		msgpack_sbuffer_clear(&s->params);
		msgpack_packer_init(&pk, &s->params, msgpack_sbuffer_write);
		msgpack_pack_array(&pk, 1);
		pack_alert(&c, a);
		push_one(d, s, a);
	}
	s->pushed = next - 1;
}

void dispatch_push_alerts(struct dispatch *d)
{
	pthread_mutex_lock(&d->lock);
	push_alerts(d);
	pthread_mutex_unlock(&d->lock);
}

void dispatch_alerts_free(struct dispatch *d)
{
	if (!d->alerts)
		return;
	msgpack_sbuffer_destroy(&d->alerts->params);
	free(d->alerts->v);
	free(d->alerts);
	d->alerts = NULL;
}
