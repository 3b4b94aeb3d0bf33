"""The playground: a web page over the other services' APIs (chat, compare, review, evaluations)."""
