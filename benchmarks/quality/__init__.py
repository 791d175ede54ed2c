"""The quality suite: final loss against initial learning rate, per problem and method."""
