/*
 * daemon_config.h: the daemon's settings, from built-in defaults, an optional
 * config file and the command line (in that order; later wins).
 */
#ifndef SIDECARD_CONFIG_H
#define SIDECARD_CONFIG_H

#include <limits.h>
#include <stdio.h>
#include <stddef.h>
#include <stdint.h>

#include "access.h"
#include "log.h"
#include "shm.h"

struct config {
	char socket_path[PATH_MAX];
	char state_dir[PATH_MAX];
	char segment_path[PATH_MAX]; /* the state segment; default: beside the socket */
	char config_file[PATH_MAX];
	unsigned socket_mode;
	long socket_gid;        /* -1: leave the group alone */
	char agent_socket_path[PATH_MAX]; /* "": no agent socket */
	unsigned agent_socket_mode;
	long agent_socket_gid;  /* -1: leave the group alone */
	struct access_config access; /* admins and readers by credentials; self set at load */
	unsigned max_per_uid;   /* connections of one uid that is no admin's */
	unsigned max_per_agent; /* connections bound to one agent */
	unsigned auth_timeout_s; /* an unauthenticated connection's time to hello, 0: none */
	int64_t hold_ttl_us;
	int expiry_charges;     /* 1: expiry charges the estimate */
	int64_t task_max_usage; /* micro-dollars, 0 = unlimited */
	int64_t alert_velocity; /* allowed checks per hour per agent raising an alert, 0 = never */
	struct shm_caps caps;
	unsigned caps_given;          /* CONFIG_CAP(field) bits: capacities the options named */
	unsigned max_holds_per_agent; /* open holds of one agent; 0: derived from the hold table */
	unsigned max_holds_per_org;   /* open holds of one org's agents; likewise */
	unsigned workers;       /* threads serving connections; 1: the main loop serves them */
	unsigned max_connections;
	unsigned max_outstanding;
	uint64_t max_outstanding_bytes;
	uint64_t max_message;
	enum log_level log_level;
	int strict;                   /* durability: 1 strict, 0 async */
	unsigned commit_interval_ms;  /* async: longest wait before a flush */
	uint64_t commit_batch;        /* async: flush at once past this many bytes */
	uint64_t segment_bytes;       /* ledger segment size before rotation */
	uint64_t checkpoint_records;  /* a snapshot every this many records */
	int64_t checkpoint_interval_us;
	unsigned time_scale;          /* the daemon's clock runs this many times faster */
	/*
	 * The directories that are default places (fsutil.h, fs_check_dir's
	 * private rule): the socket's when neither --socket nor $SIDECARD_SOCKET
	 * chose it, the segment's when it is beside such a socket, the state
	 * directory when --state-dir did not choose it.
	 */
	int socket_dir_default, segment_dir_default, state_dir_default;
	uint64_t given; /* bit i: the i-th option was set by the config file or the command line */
};

/* The caps_given bit of a struct shm_caps field (all uint32_t). */
#define CONFIG_CAP(field) (1u << (offsetof(struct shm_caps, field) / sizeof(uint32_t)))

/*
 * The hold quotas in force for a hold table of hold_cap: the options', or
 * by default a 16th of the table for one agent and half of it for one org.
 */
void config_hold_quotas(const struct config *c, uint32_t hold_cap, uint32_t *per_agent,
                        uint32_t *per_org);

/*
 * Fills c from defaults, then the config file (--config, if given), then
 * argv. Returns 0 to run, 1 when --help or --version was printed, or a
 * negative code with a message naming the option (or FILE:LINE) in err.
 */
int config_load(struct config *c, int argc, char **argv, char *err, size_t errlen);

/* 1 if option name (without "--") was set by the config file or the command line. */
int config_given(const struct config *c, const char *name);

/* Writes the --help text. */
void config_usage(FILE *out);

#endif /* SIDECARD_CONFIG_H */
