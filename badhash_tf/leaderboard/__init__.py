"""The bench layer: runs every attack (attack/) and every defense (defense/) and gathers
one leaderboard."""
