/*
 * daemon_config.c: parses the daemon's options. One table describes every option:
 * its name (the same on the command line as --name and in the config file as
 * "name = value"), its kind, where it goes in struct config, its bounds and
 * its help line. Runs on the main thread before anything starts.
 *
 * Defaults need no root: the socket goes where libsidecard looks for it
 * (sc_default_socket_path) and the state to $XDG_STATE_HOME/sidecard, else
 * ~/.local/state/sidecard (root: /var/lib/sidecard).
 */
#include <errno.h>
#include <grp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common.h"
#include "daemon_config.h"
#include "sidecard.h"

enum kind {
	K_PATH, K_UINT, K_SECONDS, K_MODE, K_GROUP, K_LEVEL, K_CHARGE, K_U64, K_DURABILITY, K_USERS
};

struct option_def {
	const char *name;
	enum kind kind;
	size_t off;
	uint64_t min, max;
	const char *arg, *help;
};

#define F(field) offsetof(struct config, field)
/* Where config_usage() starts a help text, for help of more than one line. */
#define HELP_INDENT "                                 "

static const struct option_def options[] = {
	{"socket", K_PATH, F(socket_path), 0, 0, "PATH", "Unix socket to serve"},
	{"state-dir", K_PATH, F(state_dir), 0, 0, "DIR", "directory of the ledger and snapshots"},
	{"segment", K_PATH, F(segment_path), 0, 0, "FILE",
	 "the state segment, mapped by the daemon and by readers; best on a\n"
	 HELP_INDENT "memory file system (default: beside the socket, its name ending .shm)"},
	{"config", K_PATH, F(config_file), 0, 0, "FILE", "read options from FILE (key = value lines)"},
	{"socket-mode", K_MODE, F(socket_mode), 0, 0777, "MODE", "socket file mode, octal (0660)"},
	{"socket-group", K_GROUP, F(socket_gid), 0, 0, "GROUP", "group owning the socket (name or gid)"},
	{"agent-socket", K_PATH, F(agent_socket_path), 0, 0, "PATH",
	 "a second socket serving only agents that present their token, for\n"
	 HELP_INDENT "containers (none)"},
	{"agent-socket-mode", K_MODE, F(agent_socket_mode), 0, 0777, "MODE",
	 "agent socket file mode, octal (0666)"},
	{"agent-socket-group", K_GROUP, F(agent_socket_gid), 0, 0, "GROUP",
	 "group owning the agent socket (name or gid)"},
	{"admin-users", K_USERS, F(access), 0, 0, "USER,...",
	 "peers that are admins besides root and the daemon's own user\n"
	 HELP_INDENT "(names or uids)"},
	{"admin-group", K_GROUP, F(access.admin_gid), 0, 0, "GROUP",
	 "peers in this group are admins (name or gid)"},
	{"reader-group", K_GROUP, F(access.reader_gid), 0, 0, "GROUP",
	 "peers in this group are readers; the state segment becomes\n"
	 HELP_INDENT "readable by it (name or gid)"},
	{"max-connections-per-uid", K_UINT, F(max_per_uid), 1, 1u << 20, "N",
	 "connections of one uid that is no admin's (64)"},
	{"max-connections-per-agent", K_UINT, F(max_per_agent), 1, 65535, "N",
	 "connections that present one agent's token (64)"},
	{"auth-timeout", K_UINT, F(auth_timeout_s), 0, 3600, "SECONDS",
	 "a connection nobody vouched for must present a token within this,\n"
	 HELP_INDENT "0 never closes it (10)"},
	{"hold-ttl", K_SECONDS, F(hold_ttl_us), 1, 365 * 86400, "SECONDS",
	 "lifetime of a hold never reported (300)"},
	{"expiry-charge", K_CHARGE, F(expiry_charges), 0, 0, "estimate|none",
	 "what an expired hold charges (estimate)"},
	{"orgs", K_UINT, F(caps.orgs), 1, 1u << 24, "N", "org capacity (1024)"},
	{"agents", K_UINT, F(caps.agents), 1, 1u << 26, "N", "agent capacity (16384)"},
	{"rules", K_UINT, F(caps.rules), 1, 1u << 28, "N", "rule capacity (65536)"},
	{"rule-texts", K_UINT, F(caps.texts), 0, 1u << 28, "N",
	 "distinct rule names and patterns, shared by the rules that use them;\n"
	 HELP_INDENT "0: as many as --rules (0)"},
	{"holds", K_UINT, F(caps.holds), 1, 1u << 28, "N", "open hold capacity (65536)"},
	{"max-holds-per-agent", K_UINT, F(max_holds_per_agent), 1, 1u << 28, "N",
	 "open holds of one agent (--holds / 16, at least 1)"},
	{"max-holds-per-org", K_UINT, F(max_holds_per_org), 1, 1u << 28, "N",
	 "open holds of one org's agents (--holds / 2, at least 1)"},
	{"history", K_UINT, F(caps.txns), 1, 1u << 28, "N", "transactions kept (65536)"},
	{"keys-per-agent", K_UINT, F(caps.keys_per_agent), 0, 4096, "N",
	 "idempotency keys kept per agent past the history (16)"},
	{"events", K_UINT, F(caps.events), 1, 1u << 28, "N", "agent events kept (65536)"},
	{"tasks", K_UINT, F(caps.tasks), 1, 1u << 28, "N", "tasks whose usage is kept (65536)"},
	{"task-max-usage", K_U64, F(task_max_usage), 0, INT64_MAX, "MICROS",
	 "cap of a task's usage in micro-dollars, 0 unlimited (5000000)"},
	{"alert-velocity", K_U64, F(alert_velocity), 0, INT64_MAX, "N",
	 "allowed checks per hour of one agent that raise a velocity alert, twice that a "
	 "critical one, 0 never (500)"},
	{"prices", K_UINT, F(caps.prices), 1, 1u << 24, "N", "model rate versions kept (4096)"},
	{"alerts", K_UINT, F(caps.alerts), 1, 1u << 28, "N", "alerts kept (65536)"},
	{"workers", K_UINT, F(workers), 1, 64, "N",
	 "threads serving client connections, at most 64; 1 serves them on\n"
	 HELP_INDENT "the main loop (1)"},
	{"max-connections", K_UINT, F(max_connections), 1, 1u << 20, "N", "client connections (1024)"},
	{"max-outstanding", K_UINT, F(max_outstanding), 1, 1u << 20, "N",
	 "unread responses per connection before reading pauses (1024)"},
	{"max-outstanding-bytes", K_U64, F(max_outstanding_bytes), 65536, UINT64_C(1) << 30, "BYTES",
	 "their bytes, past which reading pauses too (262144)"},
	{"max-message", K_U64, F(max_message), 1024, 1u << 26, "BYTES", "largest request (65536)"},
	{"durability", K_DURABILITY, F(strict), 0, 0, "strict|async",
	 "strict: reply to a change once its record is on disk; async: at once (strict)"},
	{"commit-interval", K_UINT, F(commit_interval_ms), 0, 1000, "MS",
	 "async: longest wait before records are written (2)"},
	{"commit-batch", K_U64, F(commit_batch), 4096, UINT64_C(1) << 30, "BYTES",
	 "async: write at once past this many pending bytes (1048576)"},
	{"segment-size", K_U64, F(segment_bytes), 4096, UINT64_C(1) << 40, "BYTES",
	 "ledger segment size before a new one starts (67108864)"},
	{"checkpoint-records", K_U64, F(checkpoint_records), 1, UINT64_C(1) << 40, "N",
	 "snapshot the state every N ledger records (1000000)"},
	{"checkpoint-interval", K_SECONDS, F(checkpoint_interval_us), 1, 86400, "SECONDS",
	 "snapshot the state at least this often when it changed (300)"},
	{"time-scale", K_UINT, F(time_scale), 1, 100000, "N",
	 "for demos and tests: hold TTLs, hourly windows and daily limits\n"
	 HELP_INDENT "pass N times faster; never with a ledger you keep, whose times\n"
	 HELP_INDENT "would run ahead of the real clock (1)"},
	{"log-level", K_LEVEL, F(log_level), 0, 0, "LEVEL", "error, warn, info or debug (info)"},
};

_Static_assert(sizeof(options) / sizeof(options[0]) <= 64, "struct config.given has 64 bits");

static const struct option_def *find_option(const char *name, size_t len)
{
	for (size_t i = 0; i < sizeof(options) / sizeof(options[0]); i++)
		if (strlen(options[i].name) == len && memcmp(options[i].name, name, len) == 0)
			return &options[i];
	return NULL;
}

static int parse_u64(const char *s, int base, uint64_t *out)
{
	char *end;

	if (!*s || *s == '-' || *s == '+')
		return -1;
	errno = 0;
	*out = strtoull(s, &end, base);
	return errno || *end ? -1 : 0;
}

/* Stores one option's value; where names the source for messages. */
static int set_option(struct config *c, const struct option_def *o, const char *v,
                      const char *where, char *err, size_t errlen)
{
	char *field = (char *)c + o->off;
	uint64_t n = 0;

	c->given |= UINT64_C(1) << (o - options);

	switch (o->kind) {
	case K_PATH:
		if (!*v || strlen(v) >= PATH_MAX) {
			sc_errorf(err, errlen, "%s%s: must be a path of 1 to %d bytes", where, o->name,
			     PATH_MAX - 1);
			return SC_EINVAL;
		}
		strcpy(field, v);
		return 0;
	case K_LEVEL:
		if (log_parse_level(v, (enum log_level *)field) != 0) {
			sc_errorf(err, errlen, "%s%s: '%s' is not error, warn, info or debug", where, o->name, v);
			return SC_EINVAL;
		}
		return 0;
	case K_DURABILITY:
		if (strcmp(v, "strict") != 0 && strcmp(v, "async") != 0) {
			sc_errorf(err, errlen, "%s%s: '%s' is not strict or async", where, o->name, v);
			return SC_EINVAL;
		}
		*(int *)field = strcmp(v, "strict") == 0;
		return 0;
	case K_CHARGE:
		if (strcmp(v, "estimate") != 0 && strcmp(v, "none") != 0) {
			sc_errorf(err, errlen, "%s%s: '%s' is not estimate or none", where, o->name, v);
			return SC_EINVAL;
		}
		*(int *)field = strcmp(v, "estimate") == 0;
		return 0;
	case K_USERS:
		return access_parse_users((struct access_config *)field, v, err, errlen);
	case K_GROUP: {
		struct group *g = getgrnam(v);

		if (g)
			n = g->gr_gid;
		else if (parse_u64(v, 10, &n) != 0 || n > INT32_MAX) {
			sc_errorf(err, errlen, "%s%s: no group '%s'", where, o->name, v);
			return SC_EINVAL;
		}
		*(long *)field = (long)n;
		return 0;
	}
	default:
		break;
	}
	if (parse_u64(v, o->kind == K_MODE ? 8 : 10, &n) != 0 || n < o->min || n > o->max) {
		sc_errorf(err, errlen, "%s%s: '%s' is not a%s number from %llu to %llu", where, o->name, v,
		     o->kind == K_MODE ? "n octal" : "", (unsigned long long)o->min,
		     (unsigned long long)o->max);
		return SC_EINVAL;
	}
	if (o->off >= F(caps) && o->off < F(caps) + sizeof(struct shm_caps))
		c->caps_given |= 1u << ((o->off - F(caps)) / sizeof(uint32_t));
	if (o->kind == K_SECONDS)
		*(int64_t *)field = (int64_t)n * 1000000;
	else if (o->kind == K_U64)
		*(uint64_t *)field = n;
	else
		*(unsigned *)field = (unsigned)n;
	return 0;
}

static void trim(char **s, char **e)
{
	while (*s < *e && (**s == ' ' || **s == '\t'))
		(*s)++;
	while (*e > *s && ((*e)[-1] == ' ' || (*e)[-1] == '\t' || (*e)[-1] == '\n' || (*e)[-1] == '\r'))
		(*e)--;
}

static int load_file(struct config *c, const char *path, char *err, size_t errlen)
{
	FILE *f = fopen(path, "r");
	char line[PATH_MAX + 64], where[PATH_MAX + 32];
	int lineno = 0, rc = 0;

	if (!f) {
		sc_errorf(err, errlen, "config %s: %s", path, strerror(errno));
		return -errno;
	}
	while (rc == 0 && fgets(line, sizeof(line), f)) {
		char *k = line, *ke, *v, *ve = line + strlen(line);
		const struct option_def *o;

		lineno++;
		snprintf(where, sizeof(where), "%s:%d: ", path, lineno);
		trim(&k, &ve);
		if (k == ve || *k == '#')
			continue;
		*ve = '\0';
		v = strchr(k, '=');
		if (!v) {
			sc_errorf(err, errlen, "%sexpected 'key = value'", where);
			rc = SC_EINVAL;
			break;
		}
		ke = v++;
		trim(&k, &ke);
		trim(&v, &ve);
		o = find_option(k, (size_t)(ke - k));
		if (!o || o->off == F(config_file)) {
			sc_errorf(err, errlen, "%sunknown key '%.*s'", where, (int)(ke - k), k);
			rc = SC_EINVAL;
			break;
		}
		*ve = '\0';
		rc = set_option(c, o, v, where, err, errlen);
	}
	fclose(f);
	return rc;
}

static void defaults(struct config *c)
{
	const char *xdg = getenv("XDG_STATE_HOME"), *home = getenv("HOME");

	memset(c, 0, sizeof(*c));
	if (sc_default_socket_path(c->socket_path, sizeof(c->socket_path)) != 0)
		strcpy(c->socket_path, "/tmp/sidecard.sock");
	if (geteuid() == 0)
		snprintf(c->state_dir, sizeof(c->state_dir), "/var/lib/sidecard");
	else if (xdg && *xdg)
		snprintf(c->state_dir, sizeof(c->state_dir), "%s/sidecard", xdg);
	else if (home && *home)
		snprintf(c->state_dir, sizeof(c->state_dir), "%s/.local/state/sidecard", home);
	else
		snprintf(c->state_dir, sizeof(c->state_dir), "/tmp/sidecard-%u/state",
		         (unsigned)geteuid());
	c->socket_mode = 0660;
	c->socket_gid = -1;
	c->agent_socket_mode = 0666;
	c->agent_socket_gid = -1;
	c->access.self = geteuid();
	c->access.admin_gid = -1;
	c->access.reader_gid = -1;
	c->max_per_uid = 64;
	c->max_per_agent = 64;
	c->auth_timeout_s = 10;
	c->hold_ttl_us = INT64_C(300) * 1000000;
	c->expiry_charges = 1;
	c->caps = (struct shm_caps){.orgs = 1024, .agents = 16384, .rules = 65536,
	                            .holds = 65536, .txns = 65536, .events = 65536,
	                            .tasks = 65536, .prices = 4096, .alerts = 65536,
	                            .keys_per_agent = 16};
	c->task_max_usage = 5000000;
	c->alert_velocity = 500;
	c->workers = 1;
	c->max_connections = 1024;
	c->max_outstanding = 1024;
	c->max_outstanding_bytes = 256u << 10;
	c->max_message = 65536;
	c->log_level = LOG_INFO;
	c->strict = 1;
	c->commit_interval_ms = 2;
	c->commit_batch = 1u << 20;
	c->segment_bytes = UINT64_C(64) << 20;
	c->checkpoint_records = 1000000;
	c->checkpoint_interval_us = INT64_C(300) * 1000000;
	c->time_scale = 1;
}

void config_usage(FILE *out)
{
	fprintf(out, "usage: sidecard [OPTION]...\n"
	             "The sidecard spend-control daemon: gates agents' paid actions over a Unix "
	             "socket.\n\nOptions (also accepted as 'name = value' lines in --config FILE):\n");
	for (size_t i = 0; i < sizeof(options) / sizeof(options[0]); i++) {
		char left[64];

		snprintf(left, sizeof(left), "--%s %s", options[i].name, options[i].arg);
		fprintf(out, "  %-30s %s\n", left, options[i].help);
	}
	fprintf(out, "  %-30s %s\n  %-30s %s\n", "--help", "show this help and exit", "--version",
	        "show the version and exit");
}

/*
 * The default segment: the socket's path with .shm in place of .sock (or
 * after it), so that it lives where the socket does (a memory file system
 * under /run or $XDG_RUNTIME_DIR) and a container that mounts the socket's
 * directory can read balances from it too.
 */
static int segment_beside(struct config *c, char *err, size_t errlen)
{
	size_t n = strlen(c->socket_path);
	const char *suffix = ".sock";
	size_t k = strlen(suffix);

	if (n > k && strcmp(c->socket_path + n - k, suffix) == 0)
		n -= k;
	if ((size_t)snprintf(c->segment_path, sizeof(c->segment_path), "%.*s.shm", (int)n,
	                     c->socket_path) >= sizeof(c->segment_path)) {
		sc_errorf(err, errlen, "--socket: too long to name the segment beside it (give --segment)");
		return SC_ERANGE;
	}
	return 0;
}

/*
 * So that no tenant can take every hold; a quota is never above the table
 * (the daemon refuses one at start), and a quota of the whole table means
 * none.
 */
void config_hold_quotas(const struct config *c, uint32_t hold_cap, uint32_t *per_agent,
                        uint32_t *per_org)
{
	*per_agent = c->max_holds_per_agent ? c->max_holds_per_agent
	                                    : (hold_cap / 16 ? hold_cap / 16 : 1);
	*per_org = c->max_holds_per_org ? c->max_holds_per_org : (hold_cap / 2 ? hold_cap / 2 : 1);
}

/* Splits "--name=value" or "--name value"; returns the option or NULL. */
static const struct option_def *cli_option(int argc, char **argv, int *i, const char **value)
{
	const char *a = argv[*i] + 2, *eq = strchr(a, '=');
	const struct option_def *o = find_option(a, eq ? (size_t)(eq - a) : strlen(a));

	if (!o)
		return NULL;
	if (eq)
		*value = eq + 1;
	else
		*value = *i + 1 < argc ? argv[++*i] : NULL;
	return o;
}

int config_load(struct config *c, int argc, char **argv, char *err, size_t errlen)
{
	const char *env;
	int rc;

	defaults(c);
	/* The config file first, so that the command line overrides it. */
	for (int i = 1; i < argc; i++) {
		const char *v = NULL;
		const struct option_def *o;

		if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
			config_usage(stdout);
			return 1;
		}
		if (strcmp(argv[i], "--version") == 0) {
			printf("sidecard %s (protocol %d)\n", SC_VERSION, SC_PROTOCOL_VERSION);
			return 1;
		}
		if (strncmp(argv[i], "--", 2) != 0 || !(o = cli_option(argc, argv, &i, &v))) {
			sc_errorf(err, errlen, "unknown option '%s' (see sidecard --help)", argv[i]);
			return SC_EINVAL;
		}
		if (!v) {
			sc_errorf(err, errlen, "--%s: needs a value (%s)", o->name, o->arg);
			return SC_EINVAL;
		}
		if (o->off == F(config_file) && (rc = load_file(c, v, err, errlen)) != 0)
			return rc;
	}
	for (int i = 1; i < argc; i++) {
		const char *v = NULL;
		const struct option_def *o = cli_option(argc, argv, &i, &v);

		if ((rc = set_option(c, o, v, "--", err, errlen)) != 0)
			return rc;
	}
	if (c->caps.texts == 0)
		c->caps.texts = c->caps.rules;
	env = getenv("SIDECARD_SOCKET");
	c->socket_dir_default = !config_given(c, "socket") && !(env && *env);
	c->segment_dir_default = c->socket_dir_default && !config_given(c, "segment");
	c->state_dir_default = !config_given(c, "state-dir");
	if (c->segment_path[0] == '\0' && segment_beside(c, err, errlen) != 0)
		return SC_ERANGE;
	return 0;
}

int config_given(const struct config *c, const char *name)
{
	const struct option_def *o = find_option(name, strlen(name));

	return o && (c->given & (UINT64_C(1) << (o - options)));
}
