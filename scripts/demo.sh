#!/usr/bin/env bash
echo "make demo: not yet - the live tagging issue brings it."
