/*
 * log.h: the daemon's leveled log, one line per event on stderr (which
 * systemd's journal or the terminal captures), and its assert macro.
 */
#ifndef SIDECARD_LOG_H
#define SIDECARD_LOG_H

enum log_level { LOG_ERROR, LOG_WARN, LOG_INFO, LOG_DEBUG };

void log_set_level(enum log_level level);
/* "error", "warn", "info" or "debug"; 0 or -1. */
int log_parse_level(const char *s, enum log_level *out);
void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARN, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)

/* Daemon invariants: on failure, logs file, line and the condition, then aborts. */
#define SC_ASSERT(cond)                                                                    \
	do {                                                                               \
		if (__builtin_expect(!(cond), 0))                                          \
			log_assert_failed(__FILE__, __LINE__, #cond);                      \
	} while (0)

void log_assert_failed(const char *file, int line, const char *cond) __attribute__((noreturn));

#endif /* SIDECARD_LOG_H */
