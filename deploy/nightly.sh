#!/usr/bin/env bash
# Nightly processing of an inbox: a thin wrapper around `roadnet nightly` (see README,
# "roadnet nightly").   deploy/nightly.sh INBOX OUTBOX [ROADNET NIGHTLY OPTIONS...]
exec "${ROADNET:-roadnet}" nightly --inbox "${1:?usage: nightly.sh INBOX OUTBOX [OPTIONS...]}" --outbox "${2:?usage: nightly.sh INBOX OUTBOX [OPTIONS...]}" "${@:3}"
